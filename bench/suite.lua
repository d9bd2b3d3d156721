-- A suite of 20 specs that each start from one fixture, against the same
-- suite booting a fresh guest per spec.
-- Usage: lua5.4 bench/suite.lua [specs=20]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local n = tonumber(arg[1]) or 20
provium.prepare_default_guest()
do local vm = provium.vm_fixture("fixtures/warm") vm:close() end

-- What each spec does once it has its guest.
local function body(vm, i)
  vm:write_file("/tmp/spec" .. i, "data " .. i)
  assert(vm:run("cat /tmp/spec" .. i).stdout == "data " .. i)
  assert(#vm:listdir("/etc") > 0)
end

local function prepare_fresh(vm)
  vm:mkdir("/srv/data", { parents = true })
  for k = 1, 20 do vm:write_file("/srv/data/f" .. k, string.rep("x", 1000 * k)) end
end

local t0 = provium.now()
for i = 1, n do
  local vm <close> = provium.vm_fixture("fixtures/warm")
  body(vm, i)
end
local with_fixture = provium.now() - t0

t0 = provium.now()
for i = 1, n do
  local vm <close> = provium:vm("bench-suite-" .. i, "default")
  vm:boot()
  prepare_fresh(vm)
  body(vm, i)
end
local fresh = provium.now() - t0

print(string.format("%d specs: from one fixture %.1f s (%.2f s/spec), booting fresh %.1f s (%.2f s/spec): %.1fx faster",
  n, with_fixture, with_fixture / n, fresh, fresh / n, fresh / with_fixture))
