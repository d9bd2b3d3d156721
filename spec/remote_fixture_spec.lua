-- Fixtures shared through an OCI registry (PROVIUM_FIXTURE_REMOTE): a real
-- registry (Debian's docker-registry, on 127.0.0.1 only, its data in a
-- temporary directory) and separate processes with separate caches, each
-- standing for another machine.

local guest = require("spec.support.guest")
local registry = require("spec.support.registry")
local sh, write, slurp = guest.sh, guest.write, guest.slurp
local free_port = registry.free_port

local function fresh_dir()
  return (sh("mktemp -d /tmp/provium-remote-spec.XXXXXX"):gsub("%s+$", ""))
end

-- A builder that appends a line to `log` on every run and leaves a marker
-- file in the guest.
local function builder(dir, name, log)
  write(dir .. "/" .. name .. ".fixture.lua", string.format([[
-- unique: %d
local provium = require("provium")
local f = assert(io.open(%q, "a")); f:write("built\n"); f:close()
local vm = provium:vm("remote-builder", "default")
vm:boot()
vm:write_file("/tmp/marker", "from the builder")
return vm:snapshot()
]], math.random(1, 1e9), log))
  return dir .. "/" .. name
end

--- Runs vm_fixture(path) in a new lua5.4 with its own cache and remote;
-- returns what it printed (stdout and stderr) and its exit code.
local function machine(cache, remote, path)
  local script = string.format(
    [[local p = require("provium"); local vm = p.vm_fixture(%q); io.write("marker=", vm:read_file("/tmp/marker"), "\n"); vm:close()]],
    path)
  return sh(string.format("PROVIUM_FIXTURE_CACHE=%s PROVIUM_FIXTURE_REMOTE=%s PROVIUM_SPARE=0 lua5.4 -e %q",
    cache, remote, script))
end

--- Inside a describe: a registry for its tests in a new directory, started
-- before the first test (`started(dir, addr)` is told where) and stopped,
-- the directory removed, after the last.
local function with_registry(started)
  local dir, stop
  lazy_setup(function()
    dir = fresh_dir()
    local addr
    addr, stop = registry.start(dir)
    started(dir, addr)
  end)
  lazy_teardown(function()
    if stop then stop() end
    if dir then sh("rm -rf " .. dir) end
  end)
end

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

describe("fixtures shared through an OCI registry", function()
  local dir, addr
  with_registry(function(d, a) dir, addr = d, a end)

  it("a second machine restores what the first pushed, without building", function()
    local log = dir .. "/builds-a.log"
    local path = builder(dir, "shared-a", log)
    local remote = "oci://" .. addr .. "/provium/fixtures"
    local out, code = machine(dir .. "/cache-1", remote, path)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("marker=from the builder", 1, true), out)
    assert.truthy(out:find("building fixture", 1, true), out)
    assert.are.equal("built\n", slurp(log))
    out, code = machine(dir .. "/cache-2", remote, path)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("marker=from the builder", 1, true), out)
    assert.is_nil(out:find("building fixture", 1, true), out)
    assert.are.equal("built\n", slurp(log))
    assert.is_nil(out:lower():find("warn", 1, true), out)
    -- The second cache holds it now: a third run needs neither.
    local entries = sh("ls -d " .. dir .. "/cache-2/*.snap")
    assert.are.equal(1, count(entries, "%.snap"), entries)
  end)

  it("a registry that is down costs one warning and a local build", function()
    local log = dir .. "/builds-down.log"
    local path = builder(dir, "down", log)
    local out, code = machine(dir .. "/cache-down", "oci://127.0.0.1:" .. free_port() .. "/provium/fixtures", path)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("marker=from the builder", 1, true), out)
    assert.are.equal("built\n", slurp(log))
    assert.are.equal(1, count(out, "not taken from"), out)
    assert.are.equal(1, count(out, "not shared through"), out)
  end)

  it("a corrupted blob is refused, never restored, and the fixture rebuilt", function()
    local log = dir .. "/builds-corrupt.log"
    local path = builder(dir, "corrupt", log)
    local remote = "oci://" .. addr .. "/provium/corrupt"
    local list = "find " .. dir .. "/data -path '*/blobs/*' -name data -size +1M | sort"
    local before = sh(list)
    local out, code = machine(dir .. "/cache-c1", remote, path)
    assert.are.equal(0, code, out)
    -- Overwrite bytes in the middle of the large blobs this push added (the
    -- RAM; the registry keeps blobs by digest, so this is bit rot).
    local n = 0
    for blob in sh(list):gmatch("[^\n]+") do
      if not before:find(blob, 1, true) then
        n = n + 1
        sh(string.format("printf 'XXXXXXXXXXXXXXXX' | dd of=%s bs=1 seek=100000 conv=notrunc", blob))
      end
    end
    assert.is_true(n >= 1, "no new blob over 1 MB")
    out, code = machine(dir .. "/cache-c2", remote, path)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("marker=from the builder", 1, true), out)
    assert.truthy(out:find("not taken from", 1, true), out)
    assert.truthy(out:lower():find("digest", 1, true), out)
    assert.are.equal("built\nbuilt\n", slurp(log))
  end)

  it("two machines building and pushing one key at once both succeed; the artifact stays valid", function()
    local log = dir .. "/builds-race.log"
    local path = builder(dir, "race", log)
    local remote = "oci://" .. addr .. "/provium/race"
    local script = string.format(
      [[local p = require("provium"); local vm = p.vm_fixture(%q); io.write("marker=", vm:read_file("/tmp/marker"), "\n"); vm:close()]],
      path)
    local cmd = "PROVIUM_FIXTURE_CACHE=%s/cache-r%d PROVIUM_FIXTURE_REMOTE=%s PROVIUM_SPARE=0 lua5.4 -e %q > %s/race%d.out 2>&1"
    sh(string.format(cmd, dir, 1, remote, script, dir, 1) .. " & "
      .. string.format(cmd, dir, 2, remote, script, dir, 2) .. " & wait")
    for i = 1, 2 do
      local out = slurp(dir .. "/race" .. i .. ".out")
      assert.truthy(out:find("marker=from the builder", 1, true), out)
      assert.is_nil(out:find("not shared through", 1, true), out)
    end
    assert.are.equal("built\nbuilt\n", slurp(log))
    local out, code = machine(dir .. "/cache-r3", remote, path)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("marker=from the builder", 1, true), out)
    assert.is_nil(out:find("building fixture", 1, true), out)
    assert.are.equal("built\nbuilt\n", slurp(log))
  end)
end)

-- The provium command (installed by scripts/setup; PROVIUM_CLI overrides).
local CLI = os.getenv("PROVIUM_CLI") or "provium"

--- Runs `provium fixtures ARGS` with the fixture cache `cache` and no
-- configured store; returns its output (stdout and stderr) and exit code.
local function fixtures_cmd(cache, args)
  return sh(string.format("PROVIUM_FIXTURE_CACHE=%s PROVIUM_FIXTURE_REMOTE= %s fixtures %s",
    cache, CLI, args))
end

describe("provium fixtures push, pull and prune", function()
  local dir, addr
  with_registry(function(d, a) dir, addr = d, a end)

  it("push shares a local build, pull warms another cache, prune deletes by age", function()
    local log = dir .. "/builds.log"
    local path = builder(dir, "cli", log)
    local remote = "oci://" .. addr .. "/provium/cli"
    local a, b, c = dir .. "/cache-a", dir .. "/cache-b", dir .. "/cache-c"
    -- Built with no store at all.
    local out, code = machine(a, "off", path)
    assert.are.equal(0, code, out)
    assert.are.equal("built\n", slurp(log))

    out, code = fixtures_cmd(b, "pull --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("no fixtures in oci+http://" .. addr .. "/provium/cli", 1, true), out)

    out, code = fixtures_cmd(a, "push --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.are.equal(1, count("\n" .. out, "\npushed   %x+"), out)
    assert.truthy(out:find("pushed 1 %(.- MB%) to oci%+http://.-; 0 already there, 0 skipped, 0 failed"), out)
    out, code = fixtures_cmd(a, "push --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("pushed 0 (0.0 MB)", 1, true) and out:find("1 already there", 1, true), out)

    out, code = fixtures_cmd(b, "pull --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("pulled 1 %(.- MB%) from .-; 0 already cached, 0 skipped"), out)
    assert.truthy(out:find("cli.fixture.lua", 1, true), out)
    out = fixtures_cmd(b, "list")
    assert.truthy(out:find("1 fixture(s)", 1, true), out)

    -- The pulled entry restores with no store and no build.
    out, code = machine(b, "off", path)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("marker=from the builder", 1, true), out)
    assert.is_nil(out:find("building fixture", 1, true), out)
    assert.are.equal("built\n", slurp(log))
    -- And it counts as made here: pushing it back finds it there.
    out, code = fixtures_cmd(b, "push --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("1 already there", 1, true), out)

    -- Fresh and of this protocol: nothing is stale.
    out, code = fixtures_cmd(c, "prune --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("deleted 0 (0.0 MB) from", 1, true) and out:find("1 kept", 1, true), out)
    out, code = fixtures_cmd(c, "prune --dry-run --older-than 0s --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("would delete 1 (", 1, true), out)
    assert.truthy(out:find("pushed just now", 1, true), out)
    out, code = fixtures_cmd(c, "prune --older-than 0s --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("deleted 1 (", 1, true), out)
    out, code = fixtures_cmd(c, "pull --remote " .. remote)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("no fixtures in", 1, true), out)
  end)

  it("push skips entries made for another protocol; keys select fixtures", function()
    local log = dir .. "/builds-sel.log"
    local path = builder(dir, "sel", log)
    local remote = "oci://" .. addr .. "/provium/sel"
    local a = dir .. "/cache-sel"
    local out, code = machine(a, "off", path)
    assert.are.equal(0, code, out)
    local entry = assert(sh("ls -d " .. a .. "/*.snap"):match("[^\n]+"))
    local key = assert(entry:match("(%x+)%.snap$"))
    -- A copy of it as if made by an older provium.
    local other = ("0"):rep(63) .. "1"
    sh(string.format("cp -a %s %s/%s.snap && sed -i 's/\"protocol [0-9]*\"/\"protocol 1\"/' %s/%s.snap/fixture.json",
      entry, a, other, a, other))
    out, code = fixtures_cmd(a, "push --remote " .. remote .. " " .. other:sub(1, 16))
    assert.are.equal(0, code, out)
    assert.truthy(out:find("skipped  " .. other:sub(1, 16) .. "  made with protocol 1; this provium speaks protocol", 1, true), out)
    assert.truthy(out:find("pushed 0 (0.0 MB)", 1, true), out)
    out, code = fixtures_cmd(a, "push --remote " .. remote .. " " .. key:sub(1, 8))
    assert.are.equal(0, code, out)
    assert.truthy(out:find("pushed 1 (", 1, true), out)
    out, code = fixtures_cmd(a, "push --remote " .. remote .. " abcdef12")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("provium fixtures push: no cached fixture has a key starting with abcdef12", 1, true), out)
    out, code = fixtures_cmd(a, "pull --remote " .. remote .. " " .. other:sub(1, 8))
    assert.are.equal(1, code, out)
    assert.truthy(out:find("no remote fixture has a key starting with", 1, true), out)
  end)

  it("bad input is a clear error", function()
    local c = dir .. "/cache-bad"
    local out, code = fixtures_cmd(c, "push")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("provium fixtures push: no remote store is set: pass --remote", 1, true), out)
    out, code = fixtures_cmd(c, "pull --remote http://" .. addr .. "/x")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("is not a remote fixture store: write oci://host[:port]/repository", 1, true), out)
    out, code = fixtures_cmd(c, "pull --remote oci://" .. addr .. "/x zz")
    assert.are.equal(2, code, out)
    assert.truthy(out:find("\"zz\" is not a fixture key", 1, true), out)
    out, code = fixtures_cmd(c, "prune --older-than 30 --remote oci://" .. addr .. "/x")
    assert.are.equal(2, code, out)
    assert.truthy(out:find("\"30\" is not an age", 1, true), out)
    out, code = fixtures_cmd(c, "prune --remote oci://127.0.0.1:" .. free_port() .. "/x")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("listing the fixtures failed", 1, true), out)
  end)
end)
