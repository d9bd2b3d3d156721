-- Host CPU of a guest flooding its serial console: the guest writes
-- /proc/cpuinfo to /dev/ttyS0 in a loop; the rock captures it (console.log,
-- the in-memory tail). Prints the flood rate and the share of a core this
-- process spent meanwhile (all threads: utime + stime from /proc/self/stat).
-- Usage: lua5.4 bench/console.lua [seconds=10]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local secs = tonumber(arg[1]) or 10

local u = require("util")

-- This process's pid (the first field of /proc/self/stat).
local pid = (function()
  local f = assert(io.open("/proc/self/stat"))
  local n = f:read("n")
  f:close()
  return n
end)()
local uid = io.popen("id -u"):read("l")
local base = os.getenv("XDG_RUNTIME_DIR")
base = base and (base .. "/provium") or ((os.getenv("TMPDIR") or "/tmp") .. "/provium-" .. uid)

local function logged()
  local h = io.popen("cat " .. base .. "/" .. pid .. "-*/console.log* 2>/dev/null | wc -c")
  local n = tonumber(h:read("a"))
  h:close()
  return n
end

local vm <close> = provium:vm("bench-console", "default")
vm:boot()
local p <close> = vm:run_async("sh", { args = { "-c", "while true; do cat /proc/cpuinfo; done > /dev/ttyS0" } })
os.execute("sleep 1")
local c0 = u.proc_cpu(pid)
local b0, t0 = logged(), provium.now()
os.execute("sleep " .. secs)
local c1 = u.proc_cpu(pid)
local b1, t1 = logged(), provium.now()
p:kill("kill")
print(string.format("console flood %.0f KB/s for %.1f s: this process used %.1f %% of a core",
  (b1 - b0) / (t1 - t0) / 1000, t1 - t0, (c1 - c0) / (t1 - t0) * 100))
