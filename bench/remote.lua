-- A fixture of the default guest pulled from an OCI registry and restored,
-- against building it, in the same run: the figure a CI runner sees when
-- another runner already pushed the fixture. A real registry (Debian's
-- docker-registry on 127.0.0.1, data in a temporary directory); each
-- measurement is a new lua5.4 process with an empty cache, timing
-- `provium.vm_fixture` and the first answered op, rounds interleaved.
-- Usage: lua5.4 bench/remote.lua [rounds=3]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
local guest = require("spec.support.guest")
local registry = require("spec.support.registry")
u.host_probe(provium.now)

local rounds = tonumber(arg[1]) or 3
local dir = (guest.sh("mktemp -d /tmp/provium-bench-remote.XXXXXX"):gsub("%s+$", ""))
local addr, stop = registry.start(dir)
local remote = "oci://" .. addr .. "/bench/fixtures"

-- The builder: the default guest, booted, with a file written (what a
-- package install would leave, in small).
guest.write(dir .. "/bench.fixture.lua", string.format([[
-- unique: %d
local provium = require("provium")
local vm = provium:vm("bench-remote", "default")
vm:boot()
vm:write_file("/tmp/ready", "yes")
return vm:snapshot()
]], math.random(1, 1e9)))

--- Seconds from vm_fixture to the first answer, in a new process with an
-- empty cache `cache` and PROVIUM_FIXTURE_REMOTE=`where`.
local function timed(cache, where)
  local script = string.format([[
local p = require("provium")
local t = p.now()
local vm = p.vm_fixture(%q)
assert(vm:read_file("/tmp/ready") == "yes")
io.write(string.format("took=%%.3f\n", p.now() - t))
vm:close()]], dir .. "/bench")
  local out, code = guest.sh(string.format("PROVIUM_FIXTURE_CACHE=%s PROVIUM_FIXTURE_REMOTE=%s PROVIUM_SPARE=0 lua5.4 -e %q",
    cache, where, script))
  assert(code == 0, out)
  return assert(tonumber(out:match("took=([%d.]+)")), out), out
end

-- Push it once (a build with the remote set).
local _, first = timed(dir .. "/cache-seed", remote)
assert(first:find("building fixture", 1, true), first)
local build, pull = {}, {}
for r = 1, rounds do
  build[r] = timed(dir .. "/cache-build" .. r, "off")
  local t, out = timed(dir .. "/cache-pull" .. r, remote)
  assert(not out:find("building fixture", 1, true), out)
  pull[r] = t
end
stop()
local size = guest.sh("du -sb " .. dir .. "/data | cut -f1")
guest.sh("rm -rf " .. dir)
print(string.format("artifact in the registry: %.1f MB (zstd layers of the snapshot)", tonumber(size) / 1e6))
print(string.format("build it here:          median %.2f s [%s]", u.median(build), u.fmt_list(build, "%.2f")))
print(string.format("pull it and restore it: median %.2f s [%s]", u.median(pull), u.fmt_list(pull, "%.2f")))
print(string.format("pull + restore is %.1fx faster than building this (small) fixture", u.median(build) / u.median(pull)))
