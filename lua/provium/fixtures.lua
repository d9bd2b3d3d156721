--- Fixtures: booted VMs resumed from cached snapshots (`provium.vm_fixture`),
-- and the fixture cache (`provium.fixtures`).
-- @module provium.fixtures

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")
local Vm = require("provium.vm")
local Snapshot = require("provium.snapshot")
local core = require("provium.core")

local check, UD = errors.check, object.UD

local M = {}

local fixture_count = 0
local evicted = false
-- Keys of the fixture builds in progress (a builder may use other fixtures).
local building = {}

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

--- Runs the builder file and returns the Snapshot it returns and its
-- staging directory; closes the VMs the builder created (the snapshot holds
-- what they were).
local function build(builder, hex)
  local before = set_of(Vm._live())
  local chunk, lerr = loadfile(builder)
  if not chunk then
    errors.raisef("provium.vm_fixture: cannot load %s: %s", builder, tostring(lerr))
  end
  building[#building + 1] = hex
  local stage = check(core.fixture_stage(hex))
  core.progress("building fixture " .. builder)
  local t0 = core.now()
  local ok, snap = xpcall(chunk, debug.traceback)
  -- Snapshots of an enclosing build go to its staging directory again.
  building[#building] = nil
  check(core.fixture_stage(building[#building]))
  for _, vm in ipairs(Vm._live()) do
    if not before[vm] then pcall(vm.close, vm) end
  end
  if not ok then
    pcall(core.fixture_unstage, stage)
    errors.raisef("provium.vm_fixture: the builder %s failed: %s", builder, tostring(snap))
  end
  if getmetatable(snap) ~= Snapshot then
    pcall(core.fixture_unstage, stage)
    errors.raisef(
      "provium.vm_fixture: the builder %s must return a Snapshot (return vm:snapshot()), got %s",
      builder, type(snap) == "table" and "a table" or tostring(snap))
  end
  core.progress(string.format("fixture %s built in %.1f s", builder, core.now() - t0))
  return snap, stage
end

--- A booted VM resumed from the fixture built by `path .. ".fixture.lua"`
-- (relative to the calling file). The builder runs on first use and must
-- return a Snapshot; later calls (in any process) resume the cached one until
-- the builder or anything it depends on changes.
function M.vm_fixture(path)
  if type(path) ~= "string" or path == "" then
    errors.raisef("provium.vm_fixture: path must be a non-empty string (got %s)", type(path))
  end
  local builder = path
  if builder:sub(1, 1) ~= "/" then builder = errors.caller_dir() .. "/" .. builder end
  builder = builder .. ".fixture.lua"
  local f = io.open(builder, "rb")
  if not f then errors.raisef("provium.vm_fixture: no fixture builder at %s", builder) end
  f:close()
  if not evicted then
    evicted = true
    check(core.fixture_evict())
  end
  local key = check(core.fixture_key(builder, package.path))
  builder = key.builder
  local function find()
    local dir = check(core.fixture_lookup(key.hex))
    if dir then
      local ok, why = core.fixture_check(dir)
      if not ok then
        core.warn("rebuilding fixture " .. builder .. ": " .. tostring(why))
        check(core.fixture_discard(key.hex, tostring(why)))
        dir = nil
      end
    end
    return dir
  end
  local dir = find()
  if not dir then
    local lock = check(core.fixture_lock(key.hex, builder))
    local ok, err = pcall(function()
      dir = find()
      -- A remote store (PROVIUM_FIXTURE_REMOTE) may have it: pulled, checked
      -- and cached; any failure there is one warning and a local build.
      if not dir then dir = check(core.fixture_pull(key.hex, builder, key.manifest)) end
      if not dir then
        local snap, stage = build(builder, key.hex)
        dir = check(core.fixture_install(key.hex, rawget(snap, UD), builder, key.manifest))
        pcall(core.fixture_unstage, stage)
        check(core.fixture_push(key.hex, dir, builder))
      end
    end)
    lock:release()
    if not ok then error(err, 0) end
  end
  fixture_count = fixture_count + 1
  local vm = Vm._create(string.format("fixture:%s#%d", path, fixture_count), "default")
  -- A spare: the next restore of this fixture is started in the background
  -- and taken by the next call (PROVIUM_SPARE=0 turns it off).
  check(core.restore(rawget(vm, UD), dir, nil, true))
  return vm
end

--- Declares a host file a fixture depends on. Read by the fixture scanner
-- (a literal path only); does nothing at run time.
function M.depends_on_file(path)
  if type(path) ~= "string" or path == "" then
    errors.raisef("provium:depends_on_file: path must be a non-empty string (got %s)", type(path))
  end
end

--- The fixture cache. Location: `$PROVIUM_FIXTURE_CACHE`, else
-- `$XDG_CACHE_HOME/provium/fixtures`; size cap `$PROVIUM_FIXTURE_CACHE_MAX`
-- (default 20G), least recently used entries evicted first.
M.cache = {}

--- The cache's directory.
function M.cache.dir() return check(core.fixture_cache_dir()) end

--- The entries, least recently used first: `{ {key=, path=, size=,
-- last_used=, builder=}, ... }`.
function M.cache.list() return check(core.fixture_list()) end

--- Removes entry `key`; returns whether there was one.
function M.cache.remove(key)
  errors.want("provium.fixtures.remove", "key", key, "string")
  return check(core.fixture_remove(key))
end

--- Removes every entry not being built; returns how many it removed.
function M.cache.clean() return check(core.fixture_clean()) end

return M
