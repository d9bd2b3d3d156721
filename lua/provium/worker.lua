--- A Worker (`vm:spawn_worker`): the guest operations, run by a separate
-- agent process with its own credentials and namespaces; plus `kill(sig?)`,
-- `join()` → exit status, `close()`.
-- @classmod provium.Worker

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")
local guest_ops = require("provium.guest_ops")

local Worker = object.resource_class("Worker", "worker", { "kill", "join", "handle", "close" })
guest_ops.install(Worker, "worker")
Worker.__tostring = function(self)
  local _, what = rawget(self, object.UD):describe()
  return tostring(what)
end

return Worker
