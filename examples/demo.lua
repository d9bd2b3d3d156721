-- Boots the built-in default guest and moves files in and out of it.
-- Run with: lua5.4 examples/demo.lua   (after scripts/setup)
local provium = require("provium")

local t0 = os.clock()
local clock = function() return os.time() end
local vm <close> = provium:vm("demo", "default")
local started = clock()
vm:boot()
print(("booted %s: kernel %s"):format(tostring(vm), vm:run("uname -r").stdout:gsub("%s+$", "")))

print("guest hostname:", (vm:read_file("/etc/hostname"):gsub("%s+$", "")))

vm:write_file("/tmp/hello.txt", "hello from the host\n")
vm:mkdir("/tmp/out/nested", { parents = true })
vm:run("sort -r /tmp/hello.txt > /tmp/out/nested/copy.txt && echo done"):assert_ok()
print("copied in the guest:", (vm:read_file("/tmp/out/nested/copy.txt"):gsub("%s+$", "")))

local blob = {}
for i = 0, 255 do blob[#blob + 1] = string.char(i) end
blob = table.concat(blob):rep(4096) -- 1 MiB of every byte value
vm:write_file("/tmp/blob.bin", blob)
assert(vm:read_file("/tmp/blob.bin") == blob, "binary round trip")
print(("1 MiB binary round trip ok; stat size=%d perm=0x%x type=%s"):format(
  vm:stat("/tmp/blob.bin").size, vm:stat("/tmp/blob.bin").perm, vm:stat("/tmp/blob.bin").entry_type))

for _, e in ipairs(vm:listdir("/tmp")) do print("  /tmp/" .. e.name, e.entry_type) end

local ok, err = pcall(vm.read_file, vm, "/nope")
print("errors are objects:", ok, err.code, tostring(err))

vm:run("logger 'hello syslog'"):assert_ok()
print("syslog:", (vm:read_file("/var/log/messages"):match("[^\n]*hello syslog[^\n]*")))

vm:shutdown()
print(("shut down after %d s (state %s, cpu %.2f s)"):format(clock() - started, vm:state(), os.clock() - t0))
