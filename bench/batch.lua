-- 1,000 stats in one batch vs 1,000 sequential stats, and the batch's time
-- per entry vs the guest's own cost of the call: the agent's own Stat op
-- run 1,000 times in a loop inside the guest (`/init --bench-stat / 1000`,
-- the agent binary as a static helper), in the same rounds; and the same
-- batch of stats run inside the guest without a transport (`/init
-- --bench-batch / N`: the agent's own decoding, stat and encoding of each
-- entry, best of three runs in a new process, and its first run).
-- Issue 12's target: a batch entry <= 1.5x the guest's own cost.
-- Each round times one sequential run and 5 batches (a single batch is
-- short enough for the shared host's hiccups to move it by 20 %).
-- Usage: lua5.4 bench/batch.lua [n=1000] [rounds=5]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 1000
local rounds = tonumber(arg[2]) or 5
local vm <close> = provium:vm("bench-batch", "default")
vm:boot()
local seq, bat, own, inner, inner_first = {}, {}, {}, {}, {}
for r = 1, rounds do
  local t = provium.now()
  for _ = 1, n do vm:stat("/") end
  seq[r] = provium.now() - t
  for _ = 1, 5 do
    t = provium.now()
    local results = vm:batch(function(b) for _ = 1, n do b:stat("/") end end)
    bat[#bat + 1] = provium.now() - t
    assert(#results == n and results[n].ok.entry_type == "directory")
  end
  local loop = vm:run("/init --bench-stat / " .. n)
  assert(loop:ok(), loop.stderr)
  own[#own + 1] = assert(tonumber(loop.stdout)) / 1e9
  local inguest = vm:run("/init --bench-batch / " .. n)
  assert(inguest:ok(), inguest.stderr)
  local best, first = inguest.stdout:match("^(%d+) (%d+)")
  inner[#inner + 1] = assert(tonumber(best)) / 1e9
  inner_first[#inner_first + 1] = assert(tonumber(first)) / 1e9
end
print(string.format("%d stats: sequential %.1f ms, batch %.1f ms (medians of %d): batch is %.1fx faster",
  n, u.median(seq) * 1e3, u.median(bat) * 1e3, rounds, u.median(seq) / u.median(bat)))
local entry = u.median(bat) / n
print(string.format("batch per entry %.1f us, the guest's own stat %.1f us [%s]: %.2fx (target 1.5x)",
  entry * 1e6, u.median(own) * 1e6, u.fmt_list((function() local t = {} for i, x in ipairs(own) do t[i] = x * 1e6 end return t end)(), "%.1f"), entry / u.median(own)))
print(string.format("where an entry goes: the guest's own stat %.1f us; the agent's batch loop in the guest, no transport, %.1f us warm (%.2fx), %.1f us in its first run; the whole batch %.1f us",
  u.median(own) * 1e6, u.median(inner) * 1e6, u.median(inner) / u.median(own), u.median(inner_first) * 1e6, entry * 1e6))
