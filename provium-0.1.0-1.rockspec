-- Built with local tools only: the "command" build type runs cargo, which also
-- builds and embeds the guest agent (see build.rs).
rockspec_format = "3.0"
package = "provium"
version = "0.1.0-1"
source = {
   url = "git+file://.",
}
description = {
   summary = "Boot real Linux VMs under QEMU and drive them from Lua",
   detailed = [[
provium boots Linux guests under QEMU (KVM where the host has hardware
virtualisation, TCG elsewhere) and drives them through a Rust agent inside the
guest over virtio-vsock: files, processes, and more, from any Lua 5.4 program
or busted suite.
]],
   license = "MIT",
   labels = { "testing", "virtualization", "qemu" },
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "command",
   -- cargo names the library libprovium.so; Lua's require wants provium.so.
   build_command = "cargo build --release --locked -p provium && cp target/release/libprovium.so target/release/provium.so",
   install = {
      lib = {
         "target/release/provium.so",
      },
      lua = {
         ["provium.busted"] = "lua/provium/busted.lua",
      },
   },
}
