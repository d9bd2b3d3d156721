--- VMs: the Vm class and the registry of this Lua state's VMs.
-- @classmod provium.Vm

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")
local guest_ops = require("provium.guest_ops")
local Worker = require("provium.worker")
local Snapshot = require("provium.snapshot")
local Console = require("provium.console")
local core = require("provium.core")

local check, UD = errors.check, object.UD

local Vm = { __name = "provium.Vm" }
Vm.__index = Vm

local function ud_of(self, call) return object.own(self, Vm, call) end

-- The registry ---------------------------------------------------------------
-- The VMs of this Lua state, by name and in creation order. VMs that are not
-- closed are held here; closed ones only weakly (plus the last few, so that a
-- lookup right after a close still finds them): a suite that creates a VM per
-- test must not keep every one of them.
local live = {}
local closed = setmetatable({}, { __mode = "v" })
local recently_closed = {}
local RECENTLY_CLOSED = 16
local order, ordered, order_limit = {}, {}, 64

local function find(name)
  return live[name] or closed[name]
end

-- Called once a VM is closed: keeps it only weakly from now on.
local function retire(vm)
  local ok, name = pcall(vm.name, vm)
  if not ok or live[name] ~= vm then return end
  live[name] = nil
  closed[name] = vm
  recently_closed[#recently_closed + 1] = vm
  if #recently_closed > RECENTLY_CLOSED then table.remove(recently_closed, 1) end
end

local function remember_name(name)
  if ordered[name] then return end
  ordered[name] = true
  order[#order + 1] = name
  if #order > order_limit then
    local kept = {}
    for _, n in ipairs(order) do
      if find(n) then kept[#kept + 1] = n else ordered[n] = nil end
    end
    order = kept
    order_limit = math.max(64, 2 * #order)
  end
end

--- Creates a VM, or (with a name alone) looks one up.
function Vm._create(...)
  local n = select("#", ...)
  local name, profile, opts = ...
  if n == 0 then errors.raisef("provium:vm: expected a name") end
  if n == 1 then
    errors.want("provium:vm", "name", name, "string")
    local vm = find(name)
    if not vm then errors.raisef("provium:vm: no VM named %q", name) end
    return vm
  end
  local old = type(name) == "string" and find(name)
  if old then
    local state = old:state()
    if state == "created" or state == "booted" or state == "paused" then
      errors.raisef("provium:vm: a VM named %q already exists (state %s)", name, state)
    end
    old:close()
  end
  local vm = setmetatable({ [UD] = check(core.new_vm(name, profile, opts)) }, Vm)
  if type(name) == "string" then
    remember_name(name)
    closed[name] = nil
    live[name] = vm
  end
  return vm
end

--- Live VMs, in creation order.
function Vm._live()
  local list = {}
  for _, name in ipairs(order) do
    if live[name] then list[#list + 1] = live[name] end
  end
  return list
end

--- Names of the VMs of this Lua state (live or recently closed), in creation order.
function Vm._names()
  local names = {}
  for _, name in ipairs(order) do
    if find(name) then names[#names + 1] = name end
  end
  return names
end

--- Boots every created VM concurrently.
function Vm._boot_all()
  local list = {}
  for _, vm in ipairs(Vm._live()) do
    if vm:state() == "created" then list[#list + 1] = rawget(vm, UD) end
  end
  check(core.boot_many(list))
end

--- Shuts every live VM down.
function Vm._shutdown_all()
  for _, vm in ipairs(Vm._live()) do vm:shutdown() end
end

-- Methods ---------------------------------------------------------------------

--- The VM's name.
function Vm:name() return check(ud_of(self, "vm:name"):name()) end
--- The VM's profile name.
function Vm:profile() return check(ud_of(self, "vm:profile"):profile()) end
--- `created`, `booted`, `paused`, `dead` or `shutdown`.
function Vm:state() return check(ud_of(self, "vm:state"):state()) end

--- Boots the VM; returns it once the agent answered.
-- @param opts optional `{kernel_cmdline_append=, files={{path=, content=, mode=}}, timeout=}`
function Vm:boot(opts)
  check(ud_of(self, "vm:boot"):boot(opts))
  return self
end

--- Ends the VM at once and releases QEMU (idempotent).
function Vm:shutdown()
  check(ud_of(self, "vm:shutdown"):shutdown())
  retire(self)
end

--- Same as `shutdown`; also the `<close>` and garbage-collection hook.
function Vm:close()
  check(ud_of(self, "vm:close"):shutdown())
  retire(self)
end

--- Stops the guest's vCPUs (idempotent); guest calls raise until `resume`.
function Vm:pause()
  check(ud_of(self, "vm:pause"):pause())
  return self
end

--- Lets a paused guest run again (idempotent).
function Vm:resume()
  check(ud_of(self, "vm:resume"):resume())
  return self
end

--- Writes a snapshot of the VM (booted or paused; it carries on as it was)
-- → Snapshot. Refuses while Files or Tails of the VM are open.
-- @param path optional directory to create (kept until `snap:delete()`)
function Vm:snapshot(path)
  local ud = ud_of(self, "vm:snapshot")
  local lines, files, tails = object.open_handles(ud)
  if #lines > 0 then
    local _, name = ud:name()
    errors.raisef(
      "vm:snapshot: vm %q has %d open file(s) and %d open tail(s); close them before snapshotting:\n%s",
      name, files, tails, table.concat(lines, "\n"))
  end
  return Snapshot._wrap(check(core.snapshot(ud, path)))
end

--- Starts this VM from a snapshot (a Snapshot or its directory); returns the
-- VM once the agent answered. A booted VM is rolled back: its machine is
-- replaced, and Files, Tails, Processes and Workers of that machine raise.
-- @param opts optional `{timeout=}`
function Vm:restore(snap, opts)
  local ud = ud_of(self, "vm:restore")
  local arg = snap
  if getmetatable(snap) == Snapshot then arg = rawget(snap, UD) end
  check(core.restore(ud, arg, opts))
  return self
end

--- The serial console → Console.
function Vm:console()
  return Console._of(ud_of(self, "vm:console"))
end

-- The guest operations (spawn_worker among them).
guest_ops.install(Vm, "vm", { worker = Worker })

Vm.__close = function(self) self:close() end
Vm.__tostring = function(self)
  local ud = rawget(self, UD)
  local _, name = ud:name()
  local _, state = ud:state()
  return string.format("vm(%s state=%s)", name, state)
end

return Vm
