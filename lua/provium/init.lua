--- provium: boot real Linux VMs under QEMU and drive them from Lua.
--
-- `local provium = require("provium")`. Module functions work with a dot or
-- a colon: `provium.vm(...)` and `provium:vm(...)` are the same call.
-- The reference is docs/API.md; the types are in `provium/_meta.lua`.
-- @module provium

local errors = require("provium.errors")
errors.own_module()
local core = require("provium.core")
local object = require("provium.object")
local scope = require("provium.scope")
local handles = require("provium.handles")
local RunResult = require("provium.result")
local Vm = require("provium.vm")
local Worker = require("provium.worker")
local Snapshot = require("provium.snapshot")
local Console = require("provium.console")
local fixtures = require("provium.fixtures")

local check = errors.check

local M = {}

--- Creates a VM (`provium.vm(name, profile, opts?)`) or looks one up
-- (`provium.vm(name)`).
function M.vm(...) return Vm._create(...) end

--- Boots every created VM concurrently; returns provium.
function M.boot()
  Vm._boot_all()
  return M
end

--- Names of the VMs of this Lua state, in creation order.
function M.vm_names() return Vm._names() end

--- Shuts every VM down.
function M.shutdown() Vm._shutdown_all() end

--- Runs `fn(...)` and closes every File, Tail, Process and Worker it
-- created, in reverse order, even when it raises.
M.scope = scope.scope

--- Opens a test scope (`provium.busted` does this before each test).
M.open_test_scope = scope.open_test_scope

--- Closes the innermost test scope (also the global `_provium_close_test_scope`).
M.close_test_scope = scope.close_test_scope

M.vm_fixture = fixtures.vm_fixture
M.depends_on_file = fixtures.depends_on_file
M.fixtures = fixtures.cache

--- Builds (or finds in the cache) the default guest image; returns
-- `{kernel=, initrd=, key=, kernel_release=, kernel_package=}`.
function M.prepare_default_guest()
  return check(core.prepare_default_guest())
end

--- What this host offers VMs, as detected now: `{kind=, accel=,
-- accel_reason=, vsock=, vsock_reason=, transport=, transport_reason=}`.
function M.host()
  return check(core.host())
end

--- Monotonic time in seconds (fractional), for timing in tests and benchmarks.
M.now = core.now

M.version = core.version
M._VERSION = core.version
M.protocol_version = core.protocol_version

-- The classes, for `getmetatable(x) == provium.File` and the like.
M.Vm, M.File, M.Tail, M.Process = Vm, handles.File, handles.Tail, handles.Process
M.Worker, M.Snapshot, M.Console = Worker, Snapshot, Console
M.RunResult, M.GuestError = RunResult, errors.GuestError

-- Module functions work with a dot or a colon. The wrappers tail-call, and
-- errors name the user's call site, not these lines.
for name, f in pairs(M) do
  if type(f) == "function" then
    M[name] = function(...)
      if (...) == M then return f(select(2, ...)) end
      return f(...)
    end
  end
end
for name, f in pairs(M.fixtures) do
  M.fixtures[name] = function(...)
    if (...) == M.fixtures then return f(select(2, ...)) end
    return f(...)
  end
end

-- For provium's own specs and tools: the core module and the private key
-- under which objects keep their core userdata.
M._core = core
M._UD = object.UD

return M
