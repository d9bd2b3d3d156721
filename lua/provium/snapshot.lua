--- A snapshot of a VM (`vm:snapshot()`): `size()` → bytes on disk,
-- `path()` → its directory, `delete()`. One taken without a path is removed
-- when collected; restore it with `vm:restore(snap)`.
-- @classmod provium.Snapshot

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")

local check, UD = errors.check, object.UD

local Snapshot = { __name = "provium.Snapshot" }
Snapshot.__index = Snapshot

local function ud_of(self, call) return object.own(self, Snapshot, call) end

--- Bytes the snapshot occupies on disk.
function Snapshot:size() return check(ud_of(self, "snap:size"):size()) end
--- The snapshot's directory.
function Snapshot:path() return check(ud_of(self, "snap:path"):path()) end
--- Removes the snapshot's files (idempotent).
function Snapshot:delete() return check(ud_of(self, "snap:delete"):delete()) end
Snapshot.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return "snapshot(" .. tostring(what) .. ")"
end

--- A Snapshot object around core userdata `ud` (not scope-registered: a
-- snapshot outlives tests).
function Snapshot._wrap(ud)
  return setmetatable({ [UD] = ud }, Snapshot)
end

return Snapshot
