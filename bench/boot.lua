-- Boot of the default guest to the first answered op.
-- Usage: lua5.4 bench/boot.lua [runs=5]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local runs = tonumber(arg[1]) or 5
provium.prepare_default_guest() -- image build is not part of boot time
local times = {}
for i = 1, runs do
  local vm = provium:vm("bench-boot-" .. i, "default")
  local t0 = provium.now()
  vm:boot()
  vm:stat("/")
  times[i] = provium.now() - t0
  vm:close()
end
print(string.format("boot to first answered op, %d runs: median %.3f s, min %.3f s, max %.3f s  [%s]",
  runs, u.median(times), u.sorted(times)[1], u.sorted(times)[#times], u.fmt_list(times)))
