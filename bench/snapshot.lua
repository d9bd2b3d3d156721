-- Snapshots and fixtures: cold boot vs fixture restore to the first answered
-- op (medians, same run), and the cost of a snapshot of a booted guest.
-- Usage: lua5.4 bench/snapshot.lua [runs=10]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local runs = tonumber(arg[1]) or 10
provium.prepare_default_guest()

-- The fixture is built (or found) first; its build is not timed.
do local vm = provium.vm_fixture("fixtures/warm") vm:close() end

local boots, restores = {}, {}
for i = 1, runs do
  local t0 = provium.now()
  local vm = provium:vm("bench-cold-" .. i, "default")
  vm:boot()
  vm:stat("/")
  boots[i] = provium.now() - t0
  vm:close()
  t0 = provium.now()
  local r = provium.vm_fixture("fixtures/warm")
  assert(r:read_file("/etc/bench-ready") == "yes")
  restores[i] = provium.now() - t0
  r:close()
end

local snap_times, sizes = {}, {}
local vm <close> = provium:vm("bench-snap", "default")
vm:boot()
for i = 1, 5 do
  local t0 = provium.now()
  local s = vm:snapshot()
  snap_times[i] = provium.now() - t0
  sizes[i] = s:size()
  s:delete()
end

print(string.format("cold boot to first answered op, %d runs: median %.3f s  [%s]",
  runs, u.median(boots), u.fmt_list(boots)))
print(string.format("fixture restore to first answered op, %d runs: median %.3f s  [%s]",
  runs, u.median(restores), u.fmt_list(restores)))
print(string.format("restore / cold boot = %.1f %% (limit 25 %%; restore limit 0.400 s)",
  100 * u.median(restores) / u.median(boots)))
print(string.format("snapshot of a booted default guest, 5 runs: median %.3f s, %.1f MB on disk  [%s]",
  u.median(snap_times), u.median(sizes) / 1e6, u.fmt_list(snap_times)))
