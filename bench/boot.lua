-- Boot of the default guest to the first answered op, per transport,
-- interleaved so that drifts of the host hit each alike.
-- Usage: lua5.4 bench/boot.lua [runs=5] [transports=serial,vsock]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local runs = tonumber(arg[1]) or 5
local transports = {}
for t in (arg[2] or "serial,vsock"):gmatch("[^,]+") do transports[#transports + 1] = t end
provium.prepare_default_guest() -- image build is not part of boot time
local times = {}
for i = 1, runs do
  for _, tr in ipairs(transports) do
    times[tr] = times[tr] or {}
    local vm = provium:vm("bench-boot-" .. tr .. i, "default", { transport = tr })
    local t0 = provium.now()
    vm:boot()
    vm:stat("/")
    times[tr][i] = provium.now() - t0
    vm:close()
  end
end
for _, tr in ipairs(transports) do
  local xs = times[tr]
  print(string.format("boot to first answered op (%s), %d runs: median %.3f s, min %.3f s, max %.3f s  [%s]",
    tr, runs, u.median(xs), u.sorted(xs)[1], u.sorted(xs)[#xs], u.fmt_list(xs)))
end
