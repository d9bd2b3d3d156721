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

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

describe("fixtures shared through an OCI registry", function()
  local dir, addr, stop

  lazy_setup(function()
    dir = fresh_dir()
    addr, stop = registry.start(dir)
  end)
  lazy_teardown(function()
    if stop then stop() end
    if dir then sh("rm -rf " .. dir) end
  end)

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
