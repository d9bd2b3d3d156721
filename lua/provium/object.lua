--- The plumbing of provium's classes: each object is a table holding its
-- core userdata under a private key, with a class metatable.
-- @module provium.object

local errors = require("provium.errors")
errors.own_module()
local scope = require("provium.scope")

local M = {}

--- The key under which an object keeps its core userdata.
M.UD = setmetatable({}, { __name = "provium.private" })
local UD = M.UD

-- Guest-side objects and where they came from, for vm:snapshot's refusal:
-- obj -> { vm = <VM core userdata>, kind = "file"|"tail"|..., site = "file:line",
-- closed = bool }. Weak keys: collected objects drop out.
local origin = setmetatable({}, { __mode = "k" })

--- Records that `obj` lives in the VM of `parent` (a Vm, or an object that
-- has an origin itself); returns `obj`.
function M.track(obj, parent, kind)
  local vm
  local p = origin[parent]
  if p then vm = p.vm else vm = rawget(parent, UD) end
  origin[obj] = { vm = vm, kind = kind, site = errors.site() }
  return obj
end

--- The core userdata of the VM that `obj` (a Vm, or a tracked object such
-- as a Worker or a Process) lives in; nil when unknown.
function M.vm_of(obj)
  local o = origin[obj]
  if o then return o.vm end
  local mt = getmetatable(obj)
  if mt and mt.__name == "provium.Vm" then return rawget(obj, UD) end
  return nil
end

--- Open Files and Tails of the VM whose core userdata is `ud`, as lines;
-- also their counts.
function M.open_handles(ud)
  local lines = {}
  local files, tails = 0, 0
  for obj, o in pairs(origin) do
    if o.vm == ud and not o.closed and (o.kind == "file" or o.kind == "tail") then
      local inner = rawget(obj, UD)
      local what
      if o.kind == "file" then
        local _, fd = inner:fd()
        if fd ~= 0 then
          local _, path = inner:path()
          files = files + 1
          what = string.format("file %q", tostring(path))
        end
      else
        local _, d = inner:describe()
        tails = tails + 1
        what = "tail " .. tostring(d)
      end
      if what then lines[#lines + 1] = "  - " .. what .. " (opened at " .. o.site .. ")" end
    end
  end
  table.sort(lines)
  return lines, files, tails
end

local function article(what)
  return (what:match("^[AEIOU]") and "an " or "a ") .. what
end

--- The core userdata of `self`, which must be an instance of `class`;
-- raises naming `call` otherwise.
function M.own(self, class, call)
  if getmetatable(self) ~= class then
    local what = class.__name:gsub("^provium%.", "")
    if what == "Vm" then what = "VM" end
    errors.raisef("%s: expected %s (call it with a colon: %s(...); got %s)",
      call, article(what), call, type(self))
  end
  return rawget(self, UD)
end

--- A new object of `class` around core userdata `ud`, registered with the
-- current scope.
function M.wrap(class, ud)
  return scope.register(setmetatable({ [UD] = ud }, class))
end

--- A class whose `methods` forward to the core userdata. `returns` maps a
-- method to a function giving the class of the object it returns (a Tail).
function M.resource_class(name, label, methods, returns)
  local C = { __name = "provium." .. name }
  C.__index = C
  for _, m in ipairs(methods) do
    local call = label .. ":" .. m
    local result_class = returns and returns[m]
    C[m] = function(self, ...)
      local ud = M.own(self, C, call)
      if result_class then
        local obj = M.wrap(result_class(), errors.check(ud[m](ud, ...)))
        return M.track(obj, self, "tail")
      end
      if m == "close" and origin[self] then origin[self].closed = true end
      return errors.check(ud[m](ud, ...))
    end
  end
  C.__close = function(self) self:close() end
  C.__gc = function(self)
    local ud = rawget(self, UD)
    if ud then pcall(ud.close, ud) end
  end
  return C
end

return M
