-- Open, write 4 KiB, close, 1,000 times through File handles.
-- Usage: lua5.4 bench/handles.lua [n=1000]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 1000
local vm <close> = provium:vm("bench-handles", "default")
vm:boot()
local block = string.rep("x", 4096)
local t = provium.now()
for i = 1, n do
  local f = vm:open_file("/tmp/h" .. (i % 50), { write = true, create = true, truncate = true })
  f:write(block)
  f:close()
end
local dt = provium.now() - t
print(string.format("%d x (open, write 4 KiB, close): %.2f s, %.0f files/s (%.0f round trips/s)", n, dt, n / dt, 3 * n / dt))
