-- The public face of provium, built on the core userdata of the Rust side.
--
-- Core functions return `true, results...` or `false, err`; `check` raises
-- `err` as a plain string or as a GuestError table, never as a foreign
-- userdata, so `pcall`, `err.code`, `tostring(err)` and busted's error
-- assertions all behave as Lua programmers expect.

local core = ...

local M = {}
local UD = setmetatable({}, { __name = "provium.private" })

--- Error raised for guest OS failures.
-- Fields: `op` (e.g. "vm:read_file"), `path`, `errno`, `code` ("ENOENT"),
-- `message` ("No such file or directory"), `call` (the call with arguments).
-- `tostring(err)` reads `vm:read_file("/nope"): ENOENT: No such file or directory`;
-- string methods work on it (`err:match("ENOENT")`).
local GuestError = { __name = "provium.GuestError" }
GuestError.__tostring = function(e)
  return string.format("%s: %s: %s", e.call or e.op, e.code, e.message)
end
GuestError.__index = function(e, k)
  local f = string[k]
  if f then
    return function(self, ...) return f(tostring(self), ...) end
  end
end
GuestError.__concat = function(a, b) return tostring(a) .. tostring(b) end
M.GuestError = GuestError

local function raise(e)
  if type(e) == "table" then setmetatable(e, GuestError) end
  error(e, 0)
end

local function check(ok, ...)
  if ok then return ... end
  raise((...))
end

--- RunResult: what `vm:run` returns.
-- Fields `exit_code` (-1 when signalled, -2 when timed out), `stdout`, `stderr`,
-- `status` ("exited", "signalled", "timed_out"), `signal`, `timed_out`.
local RunResult = { __name = "provium.RunResult" }
RunResult.__index = RunResult

--- True when the process exited with status 0.
function RunResult:ok()
  return self.status == "exited" and self.exit_code == 0
end

--- Raises unless `ok()`; returns the result otherwise.
function RunResult:assert_ok(msg)
  if RunResult.ok(self) then return self end
  local what
  if self.status == "exited" then
    what = "status=exited code=" .. tostring(self.exit_code)
  elseif self.status == "signalled" then
    what = "status=signalled signal=" .. tostring(self.signal)
  else
    what = "status=timed_out"
  end
  error(string.format("%scommand failed: %s stdout=%q stderr=%q",
    msg and (msg .. ": ") or "", what, self.stdout, self.stderr), 2)
end

RunResult.__tostring = function(r)
  local status = r.status
  if r.status == "exited" then status = status .. " code=" .. tostring(r.exit_code) end
  if r.status == "signalled" then status = status .. " signal=" .. tostring(r.signal) end
  return string.format("RunResult{ status=%s, stdout=<%dB>, stderr=<%dB> }", status, #r.stdout, #r.stderr)
end
M.RunResult = RunResult

--- A VM.
local Vm = { __name = "provium.Vm" }
Vm.__index = Vm

local function ud_of(self, call)
  if getmetatable(self) ~= Vm then
    error(string.format("%s: expected a VM (call it as vm:%s(...), got %s)",
      call, call:match(":(.*)") or call, type(self)), 3)
  end
  return rawget(self, UD)
end

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

--- Powers the guest off and releases QEMU (idempotent).
function Vm:shutdown()
  check(ud_of(self, "vm:shutdown"):shutdown())
end

--- Same as `shutdown`; also the `<close>` and garbage-collection hook.
function Vm:close()
  check(ud_of(self, "vm:close"):shutdown())
end

Vm.__close = function(self) self:close() end
Vm.__tostring = function(self)
  local ud = rawget(self, UD)
  local _, name = ud:name()
  local _, state = ud:state()
  return string.format("vm(%s state=%s)", name, state)
end

local function guest_op(name)
  local call = "vm:" .. name
  return function(self, ...)
    return check(ud_of(self, call):call(name, ...))
  end
end

for _, name in ipairs({ "read_file", "write_file", "stat", "listdir", "mkdir", "unlink", "rename" }) do
  Vm[name] = guest_op(name)
end

local raw_run = guest_op("run")
--- Runs a command: `vm:run("sh command")`, `vm:run(prog, {args...})` or
-- `vm:run(prog, {args=, env=, env_clear=, cwd=, stdin=, timeout=})`.
-- @return RunResult
function Vm:run(...)
  return setmetatable(raw_run(self, ...), RunResult)
end

--- Directory of the Lua file that called into provium (for relative host paths).
local function caller_dir(level)
  for l = level, level + 15 do
    local info = debug.getinfo(l, "S")
    if not info then break end
    local src = info.source
    if src and src:sub(1, 1) == "@" and info.what ~= "C" then
      local dir = src:sub(2):match("^(.*)/[^/]*$")
      return dir or "."
    end
  end
  return "."
end

--- Copies a host file into the guest. A relative `host_path` is resolved
-- against the directory of the calling Lua file.
-- @param opts optional `{auto_dep = false}` (only read by the fixture scanner)
function Vm:push_file(host_path, guest_path, opts)
  ud_of(self, "vm:push_file")
  if type(host_path) ~= "string" or host_path == "" then
    error("vm:push_file: host_path must be a non-empty string (got " .. type(host_path) .. ")", 0)
  end
  if type(guest_path) ~= "string" or guest_path == "" then
    error("vm:push_file: guest_path must be a non-empty string (got " .. type(guest_path) .. ")", 0)
  end
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("vm:push_file: opts must be a table or nil (got " .. type(opts) .. ")", 0)
    end
    for k in pairs(opts) do
      if k ~= "auto_dep" then
        error(string.format("vm:push_file: unknown option %q in opts (known: auto_dep)", tostring(k)), 0)
      end
    end
  end
  local path = host_path
  if path:sub(1, 1) ~= "/" then path = caller_dir(2) .. "/" .. path end
  local f, err = io.open(path, "rb")
  if not f then error("vm:push_file: cannot read " .. path .. ": " .. tostring(err), 0) end
  local data = f:read("a")
  f:close()
  return check(rawget(self, UD):call("write_file", guest_path, data))
end

--- The serial console of the VM.
local Console = { __name = "provium.Console" }
Console.__index = Console

--- The whole serial log so far.
function Console:read_log() return check(rawget(self, UD):console_log()) end

--- Waits until `pattern` (a plain substring) appears on the console.
-- @param timeout duration, default 30 s
function Console:expect(pattern, timeout)
  check(rawget(self, UD):console_expect(pattern, timeout))
  return pattern
end

function Vm:console()
  return setmetatable({ [UD] = ud_of(self, "vm:console") }, Console)
end

-- The VMs of this Lua state, by name and in creation order.
local vms, order = {}, {}

local function module_self(self, call)
  if self ~= M then
    error(call .. ": call it with a colon (provium:" .. call:match(":(.*)") .. "(...))", 3)
  end
end

--- Creates a VM (`provium:vm(name, profile, opts)`) or looks one up
-- (`provium:vm(name)`).
-- @param opts `{memory="256M", cpus=1, transport="vsock"}`
function M:vm(...)
  module_self(self, "provium:vm")
  local n = select("#", ...)
  local name, profile, opts = ...
  if n == 0 then error("provium:vm: expected a name", 0) end
  if n == 1 then
    if type(name) ~= "string" then
      error("provium:vm: name must be a string (got " .. type(name) .. ")", 0)
    end
    local vm = vms[name]
    if not vm then error(string.format("provium:vm: no VM named %q", name), 0) end
    return vm
  end
  local old = type(name) == "string" and vms[name]
  if old then
    local state = old:state()
    if state == "created" or state == "booted" or state == "paused" then
      error(string.format("provium:vm: a VM named %q already exists (state %s)", name, state), 0)
    end
    old:close()
  end
  local ud = check(core.new_vm(name, profile, opts))
  local vm = setmetatable({ [UD] = ud }, Vm)
  if not old then order[#order + 1] = name end
  vms[name] = vm
  return vm
end

--- Boots every created VM concurrently; returns provium.
function M:boot()
  module_self(self, "provium:boot")
  local list = {}
  for _, name in ipairs(order) do
    local vm = vms[name]
    if vm and vm:state() == "created" then list[#list + 1] = rawget(vm, UD) end
  end
  check(core.boot_many(list))
  return self
end

--- Names of the VMs of this Lua state, in creation order.
function M:vm_names()
  module_self(self, "provium:vm_names")
  local names = {}
  for _, name in ipairs(order) do
    if vms[name] then names[#names + 1] = name end
  end
  return names
end

--- Shuts every VM down.
function M:shutdown()
  module_self(self, "provium:shutdown")
  for _, name in ipairs(order) do
    local vm = vms[name]
    if vm then vm:shutdown() end
  end
end

--- Builds (or finds in the cache) the default guest image; returns
-- `{kernel=, initrd=, key=, kernel_release=, kernel_package=}`.
function M.prepare_default_guest()
  return check(core.prepare_default_guest())
end

--- Monotonic time in seconds (fractional), for timing in tests and benchmarks.
M.now = core.now

M.version = core.version
M.protocol_version = core.protocol_version
M._core = core
M._UD = UD

return M
