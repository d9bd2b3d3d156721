-- Soak: 4 VMs driven round-robin with mixed operations for a long time,
-- reporting the host process's resident memory, descriptors and threads
-- (and the number of QEMU processes) every minute. Everything must stay
-- flat: a leak shows as a steady climb. Not part of CI (it runs for half an
-- hour by default).
-- Usage: lua5.4 bench/soak.lua [minutes=30] [vms=4]
-- Exits non-zero when the last minute's RSS, descriptors or threads exceed
-- the second minute's (after warm-up) by more than the allowed slack.
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")

local minutes = tonumber(arg[1]) or 30
local nvms = tonumber(arg[2]) or 4

local function status_field(name)
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match(name .. ":%s+(%d+)"))
end

local function count_fds()
  local p = assert(io.popen("ls /proc/" .. status_field("Pid") .. "/fd | wc -l"))
  local n = tonumber(p:read("a"))
  p:close()
  return n - 1 -- the pipe of this very popen
end

local function count_qemu()
  local p = assert(io.popen("pgrep -c -f 'provium:[s]oak-' || true"))
  local n = tonumber(p:read("a")) or 0
  p:close()
  return n
end

local function sample()
  return {
    rss = status_field("VmRSS"), -- KiB
    lua = math.floor(collectgarbage("count")), -- KiB of the Lua heap (part of rss)
    fds = count_fds(),
    threads = status_field("Threads"),
    qemu = count_qemu(),
  }
end

-- Half the VMs use each transport, so both connection kinds soak.
-- Snapshots need a migratable vsock device: kernel vhost-vsock, or serial.
local vms, can_snapshot = {}, {}
local kernel_vsock = provium.host().vsock == "kernel"
for i = 1, nvms do
  local transport = (i % 2 == 0) and "vsock" or "serial"
  local vm = provium:vm("soak-" .. i, "default", { transport = transport })
  vm:boot()
  vms[i] = vm
  can_snapshot[i] = transport == "serial" or kernel_vsock
end

local payload = string.rep("soak-payload-", 5000) -- 65 KB
local counts = { ops = 0, files = 0, tails = 0, procs = 0, workers = 0, snaps = 0, restores = 0 }

--- One round of mixed operations on `vm` (its `i`-th round).
local function round(vm, i)
  local dir = "/tmp/soak"
  vm:mkdir(dir, { parents = true })
  local path = dir .. "/f" .. (i % 7)
  vm:write_file(path, payload)
  assert(vm:read_file(path) == payload)
  assert(vm:stat(path).size == #payload)
  assert(#vm:listdir(dir) >= 1)
  local r = vm:run("echo hi; echo err >&2")
  assert(r.stdout == "hi\n" and r.stderr == "err\n")
  counts.ops = counts.ops + 6

  do
    local f <close> = vm:open_file(path, { read = true, write = true })
    f:seek(0, "end")
    f:write("tail")
    f:seek(0, "set")
    assert(#f:read(100) == 100)
    counts.files = counts.files + 1
  end

  do
    local log = dir .. "/log"
    vm:write_file(log, "")
    local t <close> = vm:tail_file(log, { start = "beginning" })
    vm:run("echo line-" .. i .. " >> " .. log)
    assert(t:read_until("\n", 10):find("line-" .. i, 1, true))
    counts.tails = counts.tails + 1
  end

  do
    local p <close> = vm:run_async("cat")
    p:stdin_write("data\n")
    p:close_stdin()
    local res = p:wait(10)
    assert(res.stdout == "data\n")
    counts.procs = counts.procs + 1
  end

  if i % 5 == 0 then
    local w <close> = vm:spawn_worker({ uid = 65534, gid = 65534 })
    assert(w:stat("/").entry_type == "directory")
    assert(w:run("id -u").stdout == "65534\n")
    counts.workers = counts.workers + 1
  end

  local b = vm:batch(function(bb)
    for k = 1, 10 do bb:stat("/") end
    bb:read_file(path)
  end)
  assert(#b == 11)
  counts.ops = counts.ops + 11
end

--- Snapshot a serial VM, restore the snapshot into a fresh VM, use it, close
--- both the copy and the snapshot; and roll the source back in place.
local function snap_cycle(vm, i)
  local snap = vm:snapshot()
  counts.snaps = counts.snaps + 1
  local copy <close> = provium:vm("soak-copy-" .. i, "default")
  copy:restore(snap)
  assert(copy:stat("/").entry_type == "directory")
  vm:restore(snap)
  counts.restores = counts.restores + 2
  snap:delete()
end

print(string.format("soak: %d VMs, %d minutes", #vms, minutes))
print("minute    rss KiB   lua KiB   fds  threads  qemu      ops  files tails procs workers snaps")
local samples = {}
local t0 = provium.now()
local next_report = t0 + 60
local i = 0
local failures = 0
while provium.now() - t0 < minutes * 60 do
  i = i + 1
  for k, vm in ipairs(vms) do
    local ok, err = pcall(round, vm, i)
    if not ok then
      failures = failures + 1
      io.stderr:write(string.format("round %d on %s failed: %s\n", i, vm:name(), tostring(err)))
    end
    if i % 20 == 0 and can_snapshot[k] then
      local ok2, err2 = pcall(snap_cycle, vm, i * 10 + k)
      if not ok2 then
        failures = failures + 1
        io.stderr:write(string.format("snapshot cycle %d on %s failed: %s\n", i, vm:name(), tostring(err2)))
      end
    end
  end
  collectgarbage("step")
  if provium.now() >= next_report then
    next_report = next_report + 60
    local s = sample()
    samples[#samples + 1] = s
    print(string.format("%6d %10d %9d %5d %8d %5d %8d %6d %5d %5d %7d %5d",
      #samples, s.rss, s.lua, s.fds, s.threads, s.qemu, counts.ops, counts.files,
      counts.tails, counts.procs, counts.workers, counts.snaps))
    io.stdout:flush()
  end
end

for _, vm in ipairs(vms) do vm:close() end
collectgarbage()
local final = sample()
print(string.format("after closing every VM: rss %d KiB, fds %d, threads %d, qemu %d",
  final.rss, final.fds, final.threads, final.qemu))
print(string.format("failed rounds: %d", failures))

-- Flatness: the last minute against the second (the first includes warm-up).
local base = samples[math.min(2, #samples)]
local last = samples[#samples]
local ok = failures == 0 and final.qemu == 0
if base and last then
  local rss_growth = (last.rss - base.rss) / base.rss
  print(string.format("rss %+.1f %% (minute %d to %d), fds %+d, threads %+d",
    rss_growth * 100, math.min(2, #samples), #samples, last.fds - base.fds, last.threads - base.threads))
  ok = ok and rss_growth < 0.10 and last.fds - base.fds <= 4 and last.threads - base.threads <= 4
end
print(ok and "soak: flat" or "soak: NOT flat (or failures)")
os.exit(ok and 0 or 1)
