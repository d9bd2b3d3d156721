-- provium's rockspec. In a checkout, `luarocks --lua-version=5.4 make` builds
-- and installs it (scripts/setup does). `scripts/pack` makes the source rock,
-- provium-0.1.0-1.src.rock, which `luarocks --lua-version=5.4 install` builds
-- anywhere with the tools below.
rockspec_format = "3.0"
package = "provium"
version = "0.1.0-1"
source = {
   -- The release tarball (`git archive` of the tag), next to this file when
   -- building from a rockspec; scripts/pack makes it. `luarocks make` ignores
   -- this and builds the checkout it runs in.
   url = "file://provium-0.1.0.tar.gz",
   dir = "provium-0.1.0",
}
description = {
   summary = "Boot real Linux VMs under QEMU and drive them from Lua",
   detailed = [[
provium boots Linux guests under QEMU (KVM where the host has hardware
virtualisation, TCG elsewhere) and drives them through a Rust agent inside the
guest over virtio-vsock: files, handles, processes, tails, workers, batches,
raw syscalls, snapshots and fixtures, from any Lua 5.4 program or busted suite.

Building needs a Rust toolchain (cargo, Rust 1.85 or later) with the
x86_64-unknown-linux-musl target (for the guest agent, a static binary) and a
C toolchain; the Lua 5.4 headers come with LuaRocks. Running needs
qemu-system-x86_64 (and, on hosts without /dev/vhost-vsock, vhost-device-vsock
from crates.io); the default guest kernel is fetched from Debian's archive on
first use. The rock also installs the `provium` command (doctor, shell, run,
image, fixtures).
]],
   license = "MIT",
   labels = { "testing", "virtualization", "qemu", "kvm", "busted" },
}
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "command",
   -- cargo builds the native module (and, through build.rs, the guest agent
   -- it embeds) and the provium command; the script stages them in
   -- target/rock/. It honours CARGO_TARGET_DIR.
   build_command = "sh scripts/build-rock",
   -- `luarocks doc provium` shows the API reference.
   copy_directories = { "docs" },
   install = {
      bin = {
         provium = "target/rock/provium",
      },
      lib = {
         ["provium.core"] = "target/rock/core.so",
      },
      lua = {
         ["provium.init"] = "lua/provium/init.lua",
         ["provium.errors"] = "lua/provium/errors.lua",
         ["provium.scope"] = "lua/provium/scope.lua",
         ["provium.object"] = "lua/provium/object.lua",
         ["provium.result"] = "lua/provium/result.lua",
         ["provium.handles"] = "lua/provium/handles.lua",
         ["provium.guest_ops"] = "lua/provium/guest_ops.lua",
         ["provium.worker"] = "lua/provium/worker.lua",
         ["provium.snapshot"] = "lua/provium/snapshot.lua",
         ["provium.console"] = "lua/provium/console.lua",
         ["provium.vm"] = "lua/provium/vm.lua",
         ["provium.fixtures"] = "lua/provium/fixtures.lua",
         ["provium.busted"] = "lua/provium/busted.lua",
         ["provium.durations"] = "lua/provium/durations.lua",
         ["provium.assertions"] = "lua/provium/assertions.lua",
         -- LuaLS types (never loaded at run time).
         ["provium._meta"] = "lua/provium/_meta.lua",
      },
   },
}
test = {
   -- busted's own test type installs busted from the LuaRocks server when the
   -- tree lacks it; this runs the busted on PATH instead (Debian's works:
   -- .busted selects lua5.4), so `luarocks test` works offline.
   type = "command",
   command = "sh scripts/rock-test",
}
