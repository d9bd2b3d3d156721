-- 1,000 stats in one batch vs 1,000 sequential stats.
-- Usage: lua5.4 bench/batch.lua [n=1000] [rounds=5]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 1000
local rounds = tonumber(arg[2]) or 5
local vm <close> = provium:vm("bench-batch", "default")
vm:boot()
local seq, bat = {}, {}
for r = 1, rounds do
  local t = provium.now()
  for _ = 1, n do vm:stat("/") end
  seq[r] = provium.now() - t
  t = provium.now()
  local results = vm:batch(function(b) for _ = 1, n do b:stat("/") end end)
  bat[r] = provium.now() - t
  assert(#results == n and results[n].ok.entry_type == "directory")
end
print(string.format("%d stats: sequential %.1f ms, batch %.1f ms (medians of %d): batch is %.1fx faster",
  n, u.median(seq) * 1e3, u.median(bat) * 1e3, rounds, u.median(seq) / u.median(bat)))
