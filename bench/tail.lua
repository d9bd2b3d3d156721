-- Tail latency: an append in the guest until the bytes are in Lua.
-- Each sample appends one line through an open File (one round trip, which
-- returns once the guest's write(2) is done) and waits for it on a Tail of
-- the same file; the append's own round trip is measured separately, so
-- their difference bounds what the tail adds.
-- Usage: lua5.4 bench/tail.lua [samples=200]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 200
local vm <close> = provium:vm("bench-tail", "default")
vm:boot()
vm:write_file("/tmp/log", "")
local f <close> = vm:open_file("/tmp/log", { write = true, append = true })
local tail <close> = vm:tail_file("/tmp/log")
local now = provium.now
local total, write_only = {}, {}
for i = 1, n do
  local t0 = now()
  f:write("line " .. i .. "\n")
  local t1 = now()
  local got = tail:read_until("\n", "5s")
  local t2 = now()
  assert(got == "line " .. i .. "\n", got)
  total[i] = (t2 - t0) * 1e3
  write_only[i] = (t1 - t0) * 1e3
end
print(string.format("%d appends: append->bytes in Lua p50 %.2f ms (p99 %.2f); the append round trip alone p50 %.2f ms; tail share p50 %.2f ms",
  n, u.median(total), u.pct(total, 99), u.median(write_only), u.median(total) - u.median(write_only)))

-- An idle tail costs no guest CPU: the agent's CPU ticks over 2 idle seconds
-- with the tail open.
local pid = vm:syscall(39).ret -- the agent process serving us
local function ticks()
  local fields = {}
  for w in vm:read_file("/proc/" .. pid .. "/stat"):match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[12]) + tonumber(fields[13]) -- utime + stime (fields 14, 15)
end
local before = ticks()
os.execute("sleep 2")
print(string.format("idle: agent CPU over 2 s with the tail open: %d ticks (1 tick = 10 ms)", ticks() - before))
