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

--- Operations that are one request each and may be batched.
M.BATCHABLE = { "read_file", "write_file", "stat", "listdir", "mkdir", "unlink", "rename",
  "chmod", "run", "syscall" }

-- File objects passed where a handle id is expected (fd_stream, ioctl).
local function unwrap_file(v)
  if getmetatable(v) == File then return rawget(v, UD) end
  return v
end

--- Adds the guest operations to class `C`; `label` ("vm", "worker") names
-- them in messages.
function M.install(C, label)
  local function op(name)
    local call = label .. ":" .. name
    return function(self, ...)
      return check(own(self, C, call):call(name, ...))
    end
  end
  for _, name in ipairs(M.BATCHABLE) do
    if name ~= "run" then C[name] = op(name) end
  end

  local raw_run = op("run")
  function C:run(...)
    return RunResult._adopt(raw_run(self, ...), object.vm_of(self))
  end
  local raw_open = op("open_file")
  function C:open_file(...) return track(wrap(File, raw_open(self, ...)), self, "file") end
  local raw_tail = op("tail_file")
  function C:tail_file(...) return track(wrap(Tail, raw_tail(self, ...)), self, "tail") end
  local raw_fd_stream = op("fd_stream")
  function C:fd_stream(f, ...)
    return track(wrap(Tail, raw_fd_stream(self, unwrap_file(f), ...)), self, "tail")
  end
  local raw_ioctl = op("ioctl")
  function C:ioctl(f, ...) return raw_ioctl(self, unwrap_file(f), ...) end
  local raw_async = op("run_async")
  function C:run_async(...) return track(wrap(Process, raw_async(self, ...)), self, "process") end

  function C:batch(fn)
    local ud = own(self, C, label .. ":batch")
    errors.want(label .. ":batch", "fn", fn, "function")
    local recorded = {}
    local b = {}
    for _, name in ipairs(M.BATCHABLE) do
      b[name] = function(_, ...)
        -- { name, args..., n = 1 + #args }
        local entry = table.pack(name, ...)
        if name == "mkdir" and type(entry[3]) == "boolean" then entry[3] = { parents = entry[3] } end
        recorded[#recorded + 1] = entry
        return #recorded
      end
    end
    fn(b)
    local results = check(ud:call("batch", recorded))
    for i, r in ipairs(results) do
      if type(r.err) == "table" then setmetatable(r.err, errors.GuestError) end
      if recorded[i][1] == "run" and r.ok then RunResult._adopt(r.ok, object.vm_of(self)) end
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
    return check(ud:call("write_file", guest_path, data, attrs))
  end
end

return M
