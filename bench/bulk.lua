-- read_file/write_file of 64 MiB vs the raw transport's bulk rate, in the same
-- run: each round measures raw host->guest, write_file, raw guest->host and
-- read_file back to back, so drifts of the shared TCG host hit all alike.
-- The same over the serial transport (the default where vsock needs a
-- vhost-user daemon), its raw rate measured on a second virtio-serial port
-- (the bench-only `_raw_port`). Issue 12's target: 70 % of the raw rate of
-- the same transport.
-- Usage: lua5.4 bench/bulk.lua [MiB=64] [rounds=5]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local mib = tonumber(arg[1]) or 64
local rounds = tonumber(arg[2]) or 5
local bytes = mib * 1024 * 1024
local vm <close> = provium:vm("bench-bulk", "default", { memory = "1G", transport = "vsock" })
vm:boot()
local svm <close> = provium:vm("bench-bulk-serial", "default", { memory = "1G", transport = "serial" })
svm:boot({ _raw_port = true })
local ud = rawget(vm, provium._UD)
local sud = rawget(svm, provium._UD)
local data = string.rep("0123456789abcdef", bytes // 16)

local function mbps(fn)
  local t = provium.now()
  fn()
  return bytes / (provium.now() - t) / 1e6
end

local raw_in, wr, raw_out, rd, swr, srd, sraw_in, sraw_out = {}, {}, {}, {}, {}, {}, {}, {}
for i = 1, rounds do
  raw_in[i] = mbps(function() assert(ud:_raw_bulk(bytes, "to_guest")) end)
  wr[i] = mbps(function() vm:write_file("/tmp/bulk", data) end)
  raw_out[i] = mbps(function() assert(ud:_raw_bulk(bytes, "from_guest")) end)
  rd[i] = mbps(function() assert(vm:read_file("/tmp/bulk") == data) end)
  sraw_in[i] = mbps(function() assert(sud:_raw_bulk(bytes, "to_guest")) end)
  swr[i] = mbps(function() svm:write_file("/tmp/bulk", data) end)
  sraw_out[i] = mbps(function() assert(sud:_raw_bulk(bytes, "from_guest")) end)
  srd[i] = mbps(function() assert(svm:read_file("/tmp/bulk") == data) end)
end

print(string.format("%d MiB, %d interleaved rounds (MB/s, median and all rounds)", mib, rounds))
local function row(name, xs, base)
  local rel = base and string.format("  %3.0f %% of raw", 100 * u.median(xs) / u.median(base)) or ""
  print(string.format("%-18s %7.1f%s   [%s]", name, u.median(xs), rel, u.fmt_list(xs, "%.0f")))
end
row("raw host->guest", raw_in)
row("write_file", wr, raw_in)
row("raw guest->host", raw_out)
row("read_file", rd, raw_out)
row("serial raw host->guest", sraw_in)
row("serial write_file", swr, sraw_in)
row("serial raw guest->host", sraw_out)
row("serial read_file", srd, sraw_out)
