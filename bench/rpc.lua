-- Round trip of vm:stat from Lua vs a raw echo on the same transport that
-- bypasses the RPC layer, measured in the same run, interleaved in rounds so
-- that drifts of the (shared, TCG) host hit both alike: over vsock (the
-- agent's service port) and over virtio-serial (the default where vsock
-- needs a vhost-user daemon; its raw echo runs on a second virtio-serial
-- port, the bench-only `_raw_port`). Issue 12's target: 1.3x the raw echo.
-- Over serial it also prints the CPU time QEMU (the guest) and this process
-- (the host) spent per op, to show which side a stat adds to a ping.
-- Usage: lua5.4 bench/rpc.lua [iterations=10000] [rounds=10]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
local guest = require("spec.support.guest") -- QEMU pids
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 10000
local rounds = tonumber(arg[2]) or 10
local per = n // rounds
local vm <close> = provium:vm("bench-rpc", "default", { transport = "vsock" })
vm:boot()
local ud = rawget(vm, provium._UD)
local svm <close> = provium:vm("bench-rpc-serial", "default", { transport = "serial" })
svm:boot({ _raw_port = true })
local sud = rawget(svm, provium._UD)
local now = provium.now
local qpid = assert(guest.qemu_pid("bench-rpc-serial"), "no QEMU for bench-rpc-serial")
-- CPU seconds of QEMU and of this process spent in the serial loops.
local cpu = { stat = { q = 0, h = 0 }, ping = { q = 0, h = 0 } }
local function cpu_of(what, fn)
  local q, h = u.proc_cpu(qpid), os.clock()
  fn()
  cpu[what].q = cpu[what].q + u.proc_cpu(qpid) - q
  cpu[what].h = cpu[what].h + os.clock() - h
end

local function timed(fn, out)
  for _ = 1, per do
    local t = now()
    fn()
    out[#out + 1] = (now() - t) * 1e6
  end
end

local echo, stat, ping, sstat, secho, sping = {}, {}, {}, {}, {}, {}
local core = provium._core
local ping_op
for i, def in ipairs(core.ops) do
  if def.name == "ping" then ping_op = i end
end
-- warm-up
assert(ud:_raw_echo(200, 64, 0))
assert(sud:_raw_echo(200, 64, 0))
for _ = 1, 200 do vm:stat("/") svm:stat("/") end
for _ = 1, rounds do
  local ok, xs = ud:_raw_echo(per, 64, 10)
  assert(ok, xs)
  table.move(xs, 1, #xs, #echo + 1, echo)
  timed(function() vm:stat("/") end, stat)
  timed(function() core.call(ud, ping_op) end, ping)
  cpu_of("stat", function() timed(function() svm:stat("/") end, sstat) end)
  ok, xs = sud:_raw_echo(per, 64, 10)
  assert(ok, xs)
  table.move(xs, 1, #xs, #secho + 1, secho)
  cpu_of("ping", function() timed(function() core.call(sud, ping_op) end, sping) end)
end

local function row(name, xs)
  print(string.format("%-30s p50 %7.1f us   mean %7.1f us   p99 %8.1f us", name, u.median(xs), u.mean(xs), u.pct(xs, 99)))
end
print(string.format("%d samples each, %d interleaved rounds", #stat, rounds))
row("raw echo, 64 B", echo)
row("vm:stat('/') from Lua", stat)
row("ping (core call, no wrapper)", ping)
row("raw echo over serial, 64 B", secho)
row("vm:stat('/') over serial", sstat)
row("ping over serial", sping)
print(string.format("vsock:  vm:stat p50 / raw echo p50 = %.2f, ping / raw echo = %.2f (target 1.3)",
  u.median(stat) / u.median(echo), u.median(ping) / u.median(echo)))
print(string.format("serial: vm:stat p50 / raw echo p50 = %.2f, ping / raw echo = %.2f (target 1.3)",
  u.median(sstat) / u.median(secho), u.median(sping) / u.median(secho)))
local ops = per * rounds
print(string.format("serial, CPU per op: ping QEMU %.1f us + host %.1f us; vm:stat QEMU %.1f us + host %.1f us",
  cpu.ping.q / ops * 1e6, cpu.ping.h / ops * 1e6, cpu.stat.q / ops * 1e6, cpu.stat.h / ops * 1e6))
