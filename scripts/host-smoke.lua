-- The host-matrix smoke: one short pass over what differs between host kinds
-- (accelerator, vsock implementation, default transport, snapshots, CIDs).
--
--   lua5.4 scripts/host-smoke.lua     (scripts/host-matrix --smoke runs it on
--                                      every host kind)
--
-- Environment: PROVIUM_SMOKE_KIND (the kind this host must be detected as),
-- PROVIUM_SMOKE_BOOT_TIMEOUT (seconds, default 120). Prints a line per step,
-- then "N passed, N failed" and a `smoke-summary:` line; exits 1 if a step
-- failed.
local provium = require("provium")

local want_kind = os.getenv("PROVIUM_SMOKE_KIND")
local boot_timeout = tonumber(os.getenv("PROVIUM_SMOKE_BOOT_TIMEOUT") or "") or 120

local passed, failed = 0, 0
local times = {}

--- Runs one step; records its time under `key` when it passes.
local function step(name, key, fn)
  local t0 = provium.now()
  local ok, err = xpcall(fn, debug.traceback)
  local dt = provium.now() - t0
  if ok then
    passed = passed + 1
    if key then times[key] = dt end
    print(("ok    %-56s %7.2f s"):format(name, dt))
  else
    failed = failed + 1
    print(("FAIL  %s (%.2f s)\n%s"):format(name, dt, tostring(err)))
  end
  return ok
end

local function check(cond, what)
  if not cond then error(what, 2) end
end

local function equal(got, want, what)
  if got ~= want then
    error(("%s: got %q, want %q"):format(what, tostring(got), tostring(want)), 2)
  end
end

local function read_host(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local host = provium.host()
print(("host: kind %s; accel %s (%s); vsock %s (%s); default transport %s"):format(
  host.kind, host.accel, host.accel_reason, host.vsock, host.vsock_reason, host.transport))

step("the host is detected as " .. (want_kind or host.kind), nil, function()
  equal(host.kind, want_kind or host.kind, "provium.host().kind")
  equal(host.transport, host.vsock == "kernel" and "vsock" or "serial", "default transport")
end)

-- Bytes 0..255 and a pseudo-random tail: binary-safe both ways.
local parts = {}
for i = 0, 255 do parts[#parts + 1] = string.char(i) end
local seed = 12345
for _ = 1, 64 * 1024 do
  seed = (seed * 1103515245 + 12345) % 2147483648
  parts[#parts + 1] = string.char(seed % 256)
end
local blob = table.concat(parts)

local vm = provium:vm("smoke", "default")
local snap
local ok = step("boot the default guest (default transport)", "boot", function()
  vm:boot { timeout = boot_timeout }
  equal(vm:state(), "booted", "state")
end)

if ok then
  step("round-trip a binary file", nil, function()
    vm:write_file("/tmp/blob", blob)
    equal(vm:stat("/tmp/blob").size, #blob, "size in the guest")
    check(vm:read_file("/tmp/blob") == blob, "the file read back differs")
  end)

  step("run a command", nil, function()
    local r = vm:run("sha256sum /tmp/blob && echo stderr-line >&2 && exit 3")
    equal(r.exit_code, 3, "exit code")
    check(r.stdout:match("^%x+  /tmp/blob"), "stdout " .. r.stdout)
    equal(r.stderr, "stderr-line\n", "stderr")
  end)

  step("snapshot the booted VM", "snapshot", function()
    vm:write_file("/tmp/marker", "before")
    snap = vm:snapshot()
    local meta = read_host(snap:path() .. "/snapshot.json")
    check(meta:find('"transport": "' .. host.transport .. '"', 1, true), "snapshot.json:\n" .. meta)
    check(meta:find('"accel": "' .. host.accel .. '"', 1, true), "snapshot.json:\n" .. meta)
  end)
end

if snap then
  step("roll the VM back in place", "rollback", function()
    vm:write_file("/tmp/marker", "after")
    vm:restore(snap, { timeout = boot_timeout })
    equal(vm:read_file("/tmp/marker"), "before", "marker after the rollback")
    check(vm:read_file("/tmp/blob") == blob, "the blob differs after the rollback")
  end)

  -- Two copies of one snapshot alive at once, beside the original: with
  -- kernel vsock each needs its own CID and host port.
  local copies = {}
  step("restore into a new VM", "restore", function()
    copies[1] = provium:vm("smoke-copy-1", "default")
    copies[1]:restore(snap, { timeout = boot_timeout })
    equal(copies[1]:read_file("/tmp/marker"), "before", "marker in the copy")
  end)
  step("restore a second copy while the first runs", nil, function()
    copies[2] = provium:vm("smoke-copy-2", "default")
    copies[2]:restore(snap, { timeout = boot_timeout })
    for i, c in ipairs(copies) do c:write_file("/tmp/marker", "copy " .. i) end
    vm:write_file("/tmp/marker", "original")
    for i, c in ipairs(copies) do equal(c:read_file("/tmp/marker"), "copy " .. i, "copy " .. i) end
    equal(vm:read_file("/tmp/marker"), "original", "the original")
  end)
  for _, c in ipairs(copies) do c:close() end
  snap:delete()
end
vm:close()

-- The transport this kind does not default to: vsock through vhost-device-vsock
-- where serial is the default, serial where kernel vsock is.
local other = host.transport == "serial" and "vsock" or "serial"
step("boot a " .. other .. " VM too", nil, function()
  local ovm <close> = provium:vm("smoke-" .. other, "default", { transport = other })
  ovm:boot { timeout = boot_timeout }
  equal(ovm:read_file("/etc/hostname"), "provium\n", "/etc/hostname")
  local cmdline = ovm:run("cat /proc/cmdline").stdout
  local says = other == "serial" and "provium.transport=serial" or "provium.port=%w+"
  check(cmdline:match(says), "the kernel command line does not say " .. says .. ": " .. cmdline)
end)

step("build a fixture", "fixture_build", function()
  local fvm <close> = provium.vm_fixture("host-smoke")
  equal(fvm:read_file("/etc/smoke-fixture"), "built\n", "file written by the builder")
end)
step("reuse the fixture", "fixture_reuse", function()
  local fvm <close> = provium.vm_fixture("host-smoke")
  equal(fvm:read_file("/etc/smoke-fixture"), "built\n", "file written by the builder")
  equal(#provium.fixtures.list(), 1, "fixtures in the cache")
end)

print(("%d passed, %d failed"):format(passed, failed))
local function t(key) return times[key] and ("%.2fs"):format(times[key]) or "-" end
print(("smoke-summary: kind=%s accel=%s vsock=%s transport=%s boot=%s snapshot=%s rollback=%s "
  .. "restore=%s fixture_build=%s fixture_reuse=%s passed=%d failed=%d"):format(
  host.kind, host.accel, host.vsock, host.transport, t("boot"), t("snapshot"), t("rollback"),
  t("restore"), t("fixture_build"), t("fixture_reuse"), passed, failed))
os.exit(failed == 0 and 0 or 1)
