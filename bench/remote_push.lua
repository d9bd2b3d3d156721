-- Pushing fixtures to an OCI registry with `provium fixtures push`, and
-- pulling them into an empty cache with `provium fixtures pull`: wall time
-- and the peak memory (max RSS) of the provium process, for the
-- default-guest fixture and for one whose guest holds SIZE MB of random
-- data in RAM (incompressible: its artifact is as large as its RAM). A real
-- registry (Debian's docker-registry on 127.0.0.1, data in a temporary
-- directory); each round pushes to a new repository.
-- Usage: lua5.4 bench/remote_push.lua [rounds=3] [size_mb=192]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
local guest = require("spec.support.guest")
local registry = require("spec.support.registry")
u.host_probe(provium.now)

local rounds = tonumber(arg[1]) or 3
local size_mb = tonumber(arg[2]) or 192
local cli = os.getenv("PROVIUM_CLI") or "provium"
local dir = (guest.sh("mktemp -d /tmp/provium-bench-push.XXXXXX"):gsub("%s+$", ""))
local addr, stop = registry.start(dir)

-- Builders: the default guest, and one holding `size_mb` MB of random data
-- in its tmpfs (written from the host).
local data = dir .. "/random.bin"
guest.sh(string.format("head -c %dM /dev/urandom > %s", size_mb, data))
guest.write(dir .. "/small.fixture.lua", string.format([[
-- unique: %d
local provium = require("provium")
local vm = provium:vm("push-small", "default")
vm:boot()
return vm:snapshot()
]], math.random(1, 1e9)))
guest.write(dir .. "/large.fixture.lua", string.format([[
-- unique: %d
local provium = require("provium")
local vm = provium:vm("push-large", "default", { memory = "%dM" })
vm:boot()
vm:push_file(%q, "/tmp/random.bin", { auto_dep = false })
return vm:snapshot()
]], math.random(1, 1e9), size_mb + 320, data))

-- Build both into one cache, with no store.
local cache = dir .. "/cache"
for _, name in ipairs({ "small", "large" }) do
  local out, code = guest.sh(string.format(
    "PROVIUM_FIXTURE_CACHE=%s PROVIUM_FIXTURE_REMOTE=off PROVIUM_SPARE=0 lua5.4 -e %q",
    cache, string.format("local vm = require('provium').vm_fixture(%q); vm:close()", dir .. "/" .. name)))
  assert(code == 0, out)
end
local keys = {}
for line in guest.sh(string.format("PROVIUM_FIXTURE_CACHE=%s %s fixtures list", cache, cli)):gmatch("[^\n]+") do
  local key, builder = line:match("^(%x+)%s.-%s(%S+)$")
  if key and builder:find("small", 1, true) then keys.small = key end
  if key and builder:find("large", 1, true) then keys.large = key end
end
assert(keys.small and keys.large, "both fixtures are cached")

--- Pushes the fixture `key` to a new repository → seconds, peak RSS (MB),
-- MB sent.
local function push(key, round)
  local out, code = guest.sh(string.format(
    "PROVIUM_FIXTURE_CACHE=%s /usr/bin/time -f 'rss_kb=%%M wall=%%e' %s fixtures push --remote oci://%s/bench/push%d-%s %s",
    cache, cli, addr, round, key:sub(1, 8), key))
  assert(code == 0, out)
  local mb = assert(tonumber(out:match("pushed 1 %(([%d.]+) MB%)")), out)
  return assert(tonumber(out:match("wall=([%d.]+)")), out), assert(tonumber(out:match("rss_kb=(%d+)")), out) / 1024, mb
end

--- Pulls the fixture `key` from where round `round` pushed it into an
-- empty cache → seconds, peak RSS (MB).
local function pull(key, round)
  local out, code = guest.sh(string.format(
    "PROVIUM_FIXTURE_CACHE=%s/pull%d-%s /usr/bin/time -f 'rss_kb=%%M wall=%%e' %s fixtures pull --remote oci://%s/bench/push%d-%s",
    dir, round, key:sub(1, 8), cli, addr, round, key:sub(1, 8)))
  assert(code == 0 and out:find("pulled 1 (", 1, true), out)
  guest.sh(string.format("rm -rf %s/pull%d-%s", dir, round, key:sub(1, 8)))
  return assert(tonumber(out:match("wall=([%d.]+)")), out), assert(tonumber(out:match("rss_kb=(%d+)")), out) / 1024
end

local t, rss, mb = { small = {}, large = {} }, { small = {}, large = {} }, {}
local pt, prss = { small = {}, large = {} }, { small = {}, large = {} }
for r = 1, rounds do
  for _, name in ipairs({ "small", "large" }) do
    t[name][r], rss[name][r], mb[name] = push(keys[name], r)
    pt[name][r], prss[name][r] = pull(keys[name], r)
  end
end
stop()
guest.sh("rm -rf " .. dir)
for _, name in ipairs({ "small", "large" }) do
  print(string.format("%-5s fixture, %6.1f MB artifact: push median %.2f s [%s], peak RSS median %.0f MB [%s]",
    name, mb[name], u.median(t[name]), u.fmt_list(t[name], "%.2f"),
    u.median(rss[name]), u.fmt_list(rss[name], "%.0f")))
  print(string.format("%-5s fixture, %6.1f MB artifact: pull median %.2f s [%s], peak RSS median %.0f MB [%s]",
    name, mb[name], u.median(pt[name]), u.fmt_list(pt[name], "%.2f"),
    u.median(prss[name]), u.fmt_list(prss[name], "%.0f")))
end
