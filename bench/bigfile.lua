-- 1 GiB write_file then read_file: rates and the peak RSS of lua5.4.
-- Usage: lua5.4 bench/bigfile.lua [MiB=1024]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

-- Resets the peak (VmHWM) to the current RSS, so each phase's peak is its own.
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if f then f:write("5") f:close() end
end

local function rss()
  local f = io.open("/proc/self/status")
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s+(%d+)")) / 1024, tonumber(s:match("VmHWM:%s+(%d+)")) / 1024
end

local mib = tonumber(arg[1]) or 1024
local bytes = mib * 1024 * 1024
local vm <close> = provium:vm("bench-big", "default", { memory = string.format("%dM", mib * 2 + 512) })
vm:boot()
local data = string.rep("0123456789abcdef", bytes // 16)
local base = rss()
print(string.format("RSS with the %d MiB source string: %.0f MiB", mib, base))
reset_peak()
local t = provium.now()
vm:write_file("/tmp/big", data)
local wt = provium.now() - t
local _, hwm_w = rss()
reset_peak()
t = provium.now()
local back = vm:read_file("/tmp/big")
local rt = provium.now() - t
assert(#back == bytes and back == data)
local _, hwm = rss()
print(string.format("write_file %d MiB: %.1f MB/s, peak RSS %.0f MiB (source %.0f MiB + %.0f MiB)",
  mib, bytes / wt / 1e6, hwm_w, base, hwm_w - base))
print(string.format("read_file  %d MiB: %.1f MB/s, peak RSS %.0f MiB (source + result: %.0f MiB, + %.0f MiB beyond)",
  mib, bytes / rt / 1e6, hwm, base + mib, hwm - base - mib))
