-- Round trip of vm:stat from Lua vs a raw echo on the same vsock path that
-- bypasses the RPC layer, measured in the same run.
-- Usage: lua5.4 bench/rpc.lua [iterations=10000]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")

local n = tonumber(arg[1]) or 10000
local vm <close> = provium:vm("bench-rpc", "default")
vm:boot()
local ud = rawget(vm, provium._UD)

local function raw_echo(size)
  local ok, samples = ud:_raw_echo(n, size, 200)
  assert(ok, samples)
  return samples
end

local function timed(fn)
  for _ = 1, 200 do fn() end
  local xs = {}
  local now = provium.now
  for i = 1, n do
    local t = now()
    fn()
    xs[i] = (now() - t) * 1e6
  end
  return xs
end

local echo = raw_echo(64)
local stat = timed(function() vm:stat("/") end)
local ping = timed(function() ud:call("ping") end)
local echo2 = raw_echo(64)

local function row(name, xs)
  print(string.format("%-28s p50 %7.1f us   mean %7.1f us   p99 %8.1f us", name, u.median(xs), u.mean(xs), u.pct(xs, 99)))
end
print(string.format("%d iterations each", n))
row("raw echo 64 B (before)", echo)
row("vm:stat('/') from Lua", stat)
row("ping (core, no Lua wrapper)", ping)
row("raw echo 64 B (after)", echo2)
local base = math.min(u.median(echo), u.median(echo2))
print(string.format("vm:stat median / raw echo median = %.2f (limit 1.50)", u.median(stat) / base))
