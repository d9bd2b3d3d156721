-- A fresh VM per spec under busted: one busted run of N specs that each
-- take a VM from one fixture, read a file and close it (bench/busted/);
-- wall time of the whole run / N, busted's start included, the fixture
-- built beforehand. Issue 12's target: 0.15 s per spec.
-- Usage: lua5.4 bench/fresh_busted.lua [specs=20] [runs=2]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 20
local runs = tonumber(arg[2]) or 2
provium.prepare_default_guest()
do local vm = provium.vm_fixture("fixtures/warm") vm:close() end

local per = {}
for r = 1, runs do
  local t0 = provium.now()
  local ok = os.execute(string.format(
    "BENCH_SPECS=%d busted --output=utfTerminal bench/busted/fresh_spec.lua > /tmp/provium-bench-busted.out 2>&1", n))
  local wall = provium.now() - t0
  if not ok then
    os.execute("tail -20 /tmp/provium-bench-busted.out >&2")
    error("busted failed")
  end
  per[r] = wall / n
  print(string.format("busted run %d: %d specs in %.2f s, %.3f s per spec", r, n, wall, per[r]))
end
print(string.format("fresh VM per spec under busted, %d specs, median of %d runs: %.3f s per spec (target 0.15 s)",
  n, runs, u.median(per)))
