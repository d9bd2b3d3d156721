--- The guest operations, shared by VMs and Workers: files, processes,
-- raw calls and batches. `guest_ops.install(Class, "vm")` adds them to a
-- class whose objects hold a core userdata with a `call(name, ...)` method.
-- @module provium.guest_ops

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")
local handles = require("provium.handles")
local RunResult = require("provium.result")
local core = require("provium.core")

local check, own, wrap, track = errors.check, object.own, object.wrap, object.track
local File, Tail, Process = handles.File, handles.Tail, handles.Process
local UD = object.UD

local M = {}

-- The guest operations, as the core's registry lists them:
-- { {name=, batch=, vm=, worker=, returns=, file_arg=}, ... }; a row's
-- index is how a call names it.
local OPS = core.ops
local core_call, core_batch = core.call, core.batch

--- Names of the operations a batch records.
M.BATCHABLE = {}
-- The index of `run` (its batch results become RunResults).
local RUN_INDEX
for index, def in ipairs(OPS) do
  if def.batch then M.BATCHABLE[#M.BATCHABLE + 1] = def.name end
  if def.name == "run" then RUN_INDEX = index end
end

-- File objects passed where a handle id is expected (fd_stream, ioctl).
local function unwrap_file(v)
  if getmetatable(v) == File then return rawget(v, UD) end
  return v
end

-- How a method's result becomes an object, by the row's `returns`.
local function wrapper(returns, classes)
  if returns == "values" then return nil end
  if returns == "run_result" then
    return function(self, r) return RunResult._adopt(r, object.vm_of(self)) end
  end
  local class = classes[returns]
  return function(self, ud) return track(wrap(class, ud), self, returns) end
end

--- Adds the guest operations to class `C`; `label` ("vm", "worker") names
-- them in messages and picks the rows offered there. `classes` maps a row's
-- `returns` to the class that wraps it (`worker` for VMs).
function M.install(C, label, classes)
  classes = setmetatable(classes or {}, { __index = { file = File, tail = Tail, process = Process } })
  for index, def in ipairs(OPS) do
    if def[label] then
      local call = label .. ":" .. def.name
      local after = wrapper(def.returns, classes)
      local method
      if def.file_arg and after then
        method = function(self, f, ...)
          return after(self, check(core_call(own(self, C, call), index, unwrap_file(f), ...)))
        end
      elseif def.file_arg then
        method = function(self, f, ...)
          return check(core_call(own(self, C, call), index, unwrap_file(f), ...))
        end
      elseif after then
        method = function(self, ...)
          return after(self, check(core_call(own(self, C, call), index, ...)))
        end
      else
        method = function(self, ...)
          return check(core_call(own(self, C, call), index, ...))
        end
      end
      C[def.name] = method
    end
  end

  function C:batch(fn)
    local ud = own(self, C, label .. ":batch")
    errors.want(label .. ":batch", "fn", fn, "function")
    local recorded, k = {}, 0
    local b = {}
    for index, def in ipairs(OPS) do
      if def.batch then
        local mkdir = def.name == "mkdir"
        b[def.name] = function(_, ...)
          -- { index, number of arguments, arguments... }
          k = k + 1
          local entry = { index, select("#", ...), ... }
          if mkdir and type(entry[4]) == "boolean" then entry[4] = { parents = entry[4] } end
          recorded[k] = entry
          return k
        end
      end
    end
    fn(b)
    local results, unfinished = check(core_batch(ud, recorded))
    -- Only the rows with an error or a run result need their class.
    for _, i in ipairs(unfinished) do
      local r = results[i]
      if type(r.err) == "table" then setmetatable(r.err, errors.GuestError) end
      if recorded[i][1] == RUN_INDEX and r.ok then RunResult._adopt(r.ok, object.vm_of(self)) end
    end
    return results
  end

  function C:push_file(host_path, guest_path, opts)
    local call = label .. ":push_file"
    local ud = own(self, C, call)
    if type(host_path) ~= "string" or host_path == "" then
      errors.raisef("%s: host_path must be a non-empty string (got %s)", call, type(host_path))
    end
    if type(guest_path) ~= "string" or guest_path == "" then
      errors.raisef("%s: guest_path must be a non-empty string (got %s)", call, type(guest_path))
    end
    check(core.check_options(call, "opts", opts, { "auto_dep", "perm", "uid", "gid" }))
    local attrs = {}
    if opts then attrs.perm, attrs.uid, attrs.gid = opts.perm, opts.uid, opts.gid end
    local path = host_path
    if path:sub(1, 1) ~= "/" then path = errors.caller_dir() .. "/" .. path end
    local data, mode = check(core.read_host_file(call, path))
    if attrs.perm == nil then attrs.perm = mode end
    return self:write_file(guest_path, data, attrs)
  end
end

return M
