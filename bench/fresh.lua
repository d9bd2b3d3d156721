-- A fresh VM per spec: the loop (vm_fixture -> read a file -> close) that a
-- suite giving every spec its own guest runs, timed per phase (medians).
-- Issue 12's target: 0.1 s per VM.
-- Usage: lua5.4 bench/fresh.lua [runs=20]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local runs = tonumber(arg[1]) or 20
provium.prepare_default_guest()
do local vm = provium.vm_fixture("fixtures/warm") vm:close() end

local total, restore, first, close = {}, {}, {}, {}
for i = 1, runs do
  local t0 = provium.now()
  local vm = provium.vm_fixture("fixtures/warm")
  local t1 = provium.now()
  assert(vm:read_file("/etc/bench-ready") == "yes")
  local t2 = provium.now()
  vm:close()
  local t3 = provium.now()
  total[i], restore[i], first[i], close[i] = t3 - t0, t1 - t0, t2 - t1, t3 - t2
end
local ms = function(t) return u.median(t) * 1e3 end
print(string.format("fresh VM per spec, %d runs (medians): %.1f ms per VM = restore %.1f + first read %.1f + close %.1f (target 100 ms)",
  runs, ms(total), ms(restore), ms(first), ms(close)))
