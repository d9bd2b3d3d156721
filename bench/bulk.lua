-- read_file/write_file of 64 MiB vs the raw transport's bulk rate, same run.
-- Usage: lua5.4 bench/bulk.lua [MiB=64] [runs=3]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")

local mib = tonumber(arg[1]) or 64
local runs = tonumber(arg[2]) or 3
local bytes = mib * 1024 * 1024
local vm <close> = provium:vm("bench-bulk", "default", { memory = "1G" })
vm:boot()
local ud = rawget(vm, provium._UD)
local data = string.rep("0123456789abcdef", bytes // 16)

local function rate(fn)
  local xs = {}
  for i = 1, runs do
    local t = provium.now()
    fn()
    xs[i] = bytes / (provium.now() - t) / 1e6
  end
  return u.median(xs), xs
end

local raw_in = rate(function() assert(ud:_raw_bulk(bytes, "to_guest")) end)
local raw_out = rate(function() assert(ud:_raw_bulk(bytes, "from_guest")) end)
local wr = rate(function() vm:write_file("/tmp/bulk", data) end)
local rd = rate(function() assert(#vm:read_file("/tmp/bulk") == bytes) end)

print(string.format("%d MiB, median of %d runs", mib, runs))
print(string.format("raw host->guest   %7.1f MB/s", raw_in))
print(string.format("write_file        %7.1f MB/s  (%.0f %% of raw)", wr, 100 * wr / raw_in))
print(string.format("raw guest->host   %7.1f MB/s", raw_out))
print(string.format("read_file         %7.1f MB/s  (%.0f %% of raw)", rd, 100 * rd / raw_out))
