-- Fixtures: built once by their builder file, cached, resumed; keyed on
-- everything the builder depends on. Each test writes its builders into a
-- fresh directory with a unique marker, so its keys are new.
local provium = require("provium")
local guest = require("spec.support.guest")

local write = guest.write

local function fresh_dir()
  local p = io.popen("mktemp -d /tmp/provium-fixture-spec.XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

-- A builder that counts its runs in _G.fixture_builds[name] and records
-- what it saw of its inputs in the guest.
local function builder_source(name, extra)
  return string.format([[
-- unique: %s %d
local provium = require("provium")
_G.fixture_builds = _G.fixture_builds or {}
_G.fixture_builds[%q] = (_G.fixture_builds[%q] or 0) + 1
local vm = provium:vm(%q, "default")
vm:boot()
vm:write_file("/tmp/built-by", %q)
%s
return vm:snapshot()
]], name, math.random(1, 1e9), name, name, "builder-" .. name, name, extra or "")
end

local function builds(name) return (_G.fixture_builds or {})[name] or 0 end

describe("provium.vm_fixture", function()
  local dir
  before_each(function() dir = fresh_dir() end)
  after_each(function()
    -- Drop this test's cache entries, then its builders.
    for _, e in ipairs(provium.fixtures.list()) do
      if e.builder and e.builder:find(dir, 1, true) then
        assert.is_true(provium.fixtures.remove(e.key))
      end
    end
    os.execute("rm -rf " .. dir)
  end)

  it("builds once, then resumes the cached snapshot", function()
    write(dir .. "/once.fixture.lua", builder_source("once"))
    local a <close> = provium.vm_fixture(dir .. "/once")
    assert.are.equal(1, builds("once"))
    assert.are.equal("booted", a:state())
    assert.are.equal("once", a:read_file("/tmp/built-by"))
    a:write_file("/tmp/built-by", "changed in a")
    local b <close> = provium.vm_fixture(dir .. "/once")
    assert.are.equal(1, builds("once"))
    assert.are.equal("once", b:read_file("/tmp/built-by"))
    assert.are_not.equal(a:name(), b:name())
    -- The builder's own VM was closed after the build.
    assert.are.equal("shutdown", provium:vm("builder-once"):state())
  end)

  it("restores the next copy ahead, which the next call takes", function()
    -- Whether the QEMU of the spare started after `vm` was restored runs.
    local function spare_of(vm)
      return guest.qemu_pid(vm:name() .. " (spare)") ~= nil
    end
    write(dir .. "/ahead.fixture.lua", builder_source("ahead"))
    local a <close> = provium.vm_fixture(dir .. "/ahead")
    assert.is_true(spare_of(a))
    a:write_file("/tmp/built-by", "changed in a")
    local b = provium.vm_fixture(dir .. "/ahead")
    -- b runs in a's spare, restored before a wrote: the snapshot's state.
    assert.are.equal("ahead", b:read_file("/tmp/built-by"))
    assert.are.equal("changed in a", a:read_file("/tmp/built-by"))
    assert.is_true(spare_of(a))
    assert.is_true(spare_of(b))
    -- A machine that came from a spare snapshots and restores like any other.
    b:write_file("/tmp/built-by", "changed in b")
    local snap = b:snapshot()
    b:close()
    assert.is_false(spare_of(a))
    local c <close> = provium:vm("from-spare-" .. math.random(1, 1e9), "default")
    c:restore(snap)
    assert.are.equal("changed in b", c:read_file("/tmp/built-by"))
    snap:delete()
    assert.are.equal(1, builds("ahead"))
  end)

  it("rebuilds when a pushed file changes, not when an auto_dep=false one does", function()
    write(dir .. "/payload.txt", "v1")
    write(dir .. "/corpus.txt", "c1")
    write(dir .. "/push.fixture.lua", builder_source("push", [[
vm:push_file("payload.txt", "/tmp/payload")
vm:push_file("corpus.txt", "/tmp/corpus", { auto_dep = false })
]]))
    local a <close> = provium.vm_fixture(dir .. "/push")
    assert.are.equal("v1", a:read_file("/tmp/payload"))
    write(dir .. "/corpus.txt", "c2")
    local b <close> = provium.vm_fixture(dir .. "/push")
    assert.are.equal(1, builds("push"))
    assert.are.equal("c1", b:read_file("/tmp/corpus"))
    write(dir .. "/payload.txt", "v2")
    local c <close> = provium.vm_fixture(dir .. "/push")
    assert.are.equal(2, builds("push"))
    assert.are.equal("v2", c:read_file("/tmp/payload"))
  end)

  it("rebuilds when a depends_on_file or a required helper changes", function()
    write(dir .. "/dep.txt", "d1")
    write(dir .. "/fxhelper.lua", "return { value = 'h1' }\n")
    write(dir .. "/deps.fixture.lua", builder_source("deps", string.format([[
provium:depends_on_file("dep.txt")
package.path = %q .. "/?.lua;" .. package.path
vm:write_file("/tmp/helper", require("fxhelper").value)
]], dir)))
    local old_path = package.path
    package.path = dir .. "/?.lua;" .. package.path
    local a <close> = provium.vm_fixture(dir .. "/deps")
    assert.are.equal("h1", a:read_file("/tmp/helper"))
    write(dir .. "/dep.txt", "d2")
    local b <close> = provium.vm_fixture(dir .. "/deps")
    assert.are.equal(2, builds("deps"))
    package.loaded.fxhelper = nil
    write(dir .. "/fxhelper.lua", "return { value = 'h2' }\n")
    local c <close> = provium.vm_fixture(dir .. "/deps")
    assert.are.equal(3, builds("deps"))
    assert.are.equal("h2", c:read_file("/tmp/helper"))
    package.path = old_path
    package.loaded.fxhelper = nil
  end)

  it("lets fixtures build on other fixtures", function()
    write(dir .. "/lower.fixture.lua", builder_source("lower"))
    write(dir .. "/upper.fixture.lua", [[
-- unique: ]] .. math.random(1, 1e9) .. [[

local provium = require("provium")
local vm = provium.vm_fixture("lower")
vm:write_file("/tmp/upper", "on top")
return vm:snapshot()
]])
    local vm <close> = provium.vm_fixture(dir .. "/upper")
    assert.are.equal("lower", vm:read_file("/tmp/built-by"))
    assert.are.equal("on top", vm:read_file("/tmp/upper"))
    -- A change to the lower fixture rebuilds the upper one too.
    write(dir .. "/lower.fixture.lua", builder_source("lower") .. "\n-- changed\n")
    local before = builds("lower")
    local again <close> = provium.vm_fixture(dir .. "/upper")
    assert.are.equal(before + 1, builds("lower"))
    assert.are.equal("on top", again:read_file("/tmp/upper"))
  end)

  it("rebuilds a corrupt cache entry with a warning", function()
    write(dir .. "/corrupt.fixture.lua", builder_source("corrupt"))
    local a <close> = provium.vm_fixture(dir .. "/corrupt")
    local entry
    for _, e in ipairs(provium.fixtures.list()) do
      if e.builder and e.builder:find(dir, 1, true) then entry = e end
    end
    assert.is_table(entry, "the entry is not listed")
    assert.is_true(entry.size > 0)
    write(entry.path .. "/snapshot.json", '{"format": 99}\n')
    local b <close> = provium.vm_fixture(dir .. "/corrupt")
    assert.are.equal(2, builds("corrupt"))
    assert.are.equal("corrupt", b:read_file("/tmp/built-by"))
  end)

  it("raises clear errors for bad builders and arguments", function()
    local err = guest.error_of(provium.vm_fixture, dir .. "/missing")
    assert.truthy(err:find("no fixture builder at " .. dir .. "/missing.fixture.lua", 1, true), err)
    err = guest.error_of(provium.vm_fixture, 42)
    assert.truthy(err:find("path must be a non-empty string", 1, true), err)
    write(dir .. "/nosnap.fixture.lua", "return 42\n")
    err = guest.error_of(provium.vm_fixture, dir .. "/nosnap")
    assert.truthy(err:find("must return a Snapshot", 1, true), err)
    write(dir .. "/fails.fixture.lua", "error('builder broke')\n")
    err = guest.error_of(provium.vm_fixture, dir .. "/fails")
    assert.truthy(err:find("fails.fixture.lua failed", 1, true), err)
    assert.truthy(err:find("builder broke", 1, true), err)
    err = guest.error_of(provium.depends_on_file, provium, 7)
    assert.truthy(err:find("path must be a non-empty string", 1, true), err)
    assert.is_nil(provium:depends_on_file("x.txt"))
    assert.is_nil(provium.depends_on_file("x.txt"))
  end)

  it("is built once when two processes need it at the same time", function()
    local log = dir .. "/builds.log"
    write(dir .. "/shared.fixture.lua", string.format([[
-- unique: %d
local provium = require("provium")
local f = assert(io.open(%q, "a")); f:write("built\n"); f:close()
local vm = provium:vm("shared-builder", "default")
vm:boot()
vm:write_file("/tmp/shared", "yes")
return vm:snapshot()
]], math.random(1, 1e9), log))
    local script = string.format(
      [[local p = require("provium"); local vm = p.vm_fixture(%q); io.write(vm:read_file("/tmp/shared")); vm:close()]],
      dir .. "/shared")
    local cmd = string.format("lua5.4 -e %q > %s/out%%d 2>&1", script, dir)
    local p1 = io.popen(string.format(cmd, 1) .. " & " .. string.format(cmd, 2) .. " & wait", "r")
    p1:read("a")
    p1:close()
    local function slurp(p) local f = io.open(p, "rb"); local s = f and f:read("a") or ""; if f then f:close() end; return s end
    assert.are.equal("yes", slurp(dir .. "/out1"):match("yes$") and "yes" or slurp(dir .. "/out1"))
    assert.are.equal("yes", slurp(dir .. "/out2"):match("yes$") and "yes" or slurp(dir .. "/out2"))
    assert.are.equal("built\n", slurp(log))
  end)
end)

describe("provium.fixtures", function()
  it("names its directory and lists entries least recently used first", function()
    assert.is_string(provium.fixtures.dir())
    local list = provium.fixtures.list()
    assert.is_table(list)
    assert.is_false(provium.fixtures.remove(string.rep("0", 64)))
    assert.has_error(function() provium.fixtures.remove(1) end)
    for i = 2, #list do
      assert.is_true(list[i - 1].last_used <= list[i].last_used)
    end
  end)
end)
