-- Round trip of vm:stat from Lua vs a raw echo on the same vsock path that
-- bypasses the RPC layer, measured in the same run, interleaved in rounds so
-- that drifts of the (shared, TCG) host hit both alike; plus vm:stat over
-- the virtio-serial transport (the default where vsock needs a vhost-user
-- daemon), which has no raw probe.
-- Usage: lua5.4 bench/rpc.lua [iterations=10000] [rounds=10]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 10000
local rounds = tonumber(arg[2]) or 10
local per = n // rounds
local vm <close> = provium:vm("bench-rpc", "default", { transport = "vsock" })
vm:boot()
local ud = rawget(vm, provium._UD)
local svm <close> = provium:vm("bench-rpc-serial", "default", { transport = "serial" })
svm:boot()
local now = provium.now

local function timed(fn, out)
  for _ = 1, per do
    local t = now()
    fn()
    out[#out + 1] = (now() - t) * 1e6
  end
end

local echo, stat, ping, sstat = {}, {}, {}, {}
local core = provium._core
local ping_op
for i, def in ipairs(core.ops) do
  if def.name == "ping" then ping_op = i end
end
-- warm-up
assert(ud:_raw_echo(200, 64, 0))
for _ = 1, 200 do vm:stat("/") svm:stat("/") end
for _ = 1, rounds do
  local ok, xs = ud:_raw_echo(per, 64, 10)
  assert(ok, xs)
  table.move(xs, 1, #xs, #echo + 1, echo)
  timed(function() vm:stat("/") end, stat)
  timed(function() core.call(ud, ping_op) end, ping)
  timed(function() svm:stat("/") end, sstat)
end

local function row(name, xs)
  print(string.format("%-30s p50 %7.1f us   mean %7.1f us   p99 %8.1f us", name, u.median(xs), u.mean(xs), u.pct(xs, 99)))
end
print(string.format("%d samples each, %d interleaved rounds", #stat, rounds))
row("raw echo, 64 B", echo)
row("vm:stat('/') from Lua", stat)
row("ping (core call, no wrapper)", ping)
row("vm:stat('/') over serial", sstat)
print(string.format("vm:stat p50 / raw echo p50 = %.2f (limit 1.50)", u.median(stat) / u.median(echo)))
