-- The public face of provium, built on the core userdata of the Rust side.
--
-- Core functions return `true, results...` or `false, err`; `check` raises
-- `err` as a plain string or as a GuestError table, never as a foreign
-- userdata, so `pcall`, `err.code`, `tostring(err)` and busted's error
-- assertions all behave as Lua programmers expect.

local core = ...

local M = {}
local UD = setmetatable({}, { __name = "provium.private" })

-- Guest-side objects and where they came from, for vm:snapshot's refusal:
-- obj -> { vm = <VM core userdata>, kind = "file"|"tail"|..., site = "file:line",
-- closed = bool }. Weak keys: collected objects drop out.
local origin = setmetatable({}, { __mode = "k" })
local PRELUDE_SRC = debug.getinfo(1, "S").short_src

--- `file:line` of the first caller outside provium's own Lua code.
local function creation_site()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.short_src ~= PRELUDE_SRC then
      return info.short_src .. ":" .. tostring(info.currentline)
    end
  end
  return "?"
end

-- Records that `obj` lives in the VM of `parent` (a Vm, or an object that
-- has an origin itself).
local function track(obj, parent, kind)
  local vm
  local p = origin[parent]
  if p then vm = p.vm else vm = rawget(parent, UD) end
  origin[obj] = { vm = vm, kind = kind, site = creation_site() }
  return obj
end


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
-- Defined with the VM registry below; called once a VM is closed.
local retire_vm
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
  retire_vm(self)
end

--- Same as `shutdown`; also the `<close>` and garbage-collection hook.
function Vm:close()
  check(ud_of(self, "vm:close"):shutdown())
  retire_vm(self)
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

--- A snapshot of a VM (`vm:snapshot()`): `size()` → bytes on disk,
-- `path()` → its directory, `delete()`. One taken without a path is
-- removed when collected; restore it with `vm:restore(snap)`.
local Snapshot = { __name = "provium.Snapshot" }
Snapshot.__index = Snapshot
M.Snapshot = Snapshot

local function snap_ud(self, call)
  if getmetatable(self) ~= Snapshot then
    error(string.format("%s: expected a Snapshot (call it with a colon, got %s)", call, type(self)), 3)
  end
  return rawget(self, UD)
end

--- Bytes the snapshot occupies on disk.
function Snapshot:size() return check(snap_ud(self, "snap:size"):size()) end
--- The snapshot's directory.
function Snapshot:path() return check(snap_ud(self, "snap:path"):path()) end
--- Removes the snapshot's files (idempotent).
function Snapshot:delete() return check(snap_ud(self, "snap:delete"):delete()) end
Snapshot.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return "snapshot(" .. tostring(what) .. ")"
end

--- Open Files and Tails of the VM whose core userdata is `ud`, as lines.
local function open_handles(ud)
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

--- Writes a snapshot of the VM (booted or paused; it carries on as it was)
-- → Snapshot. Refuses while Files or Tails of the VM are open.
-- @param path optional directory to create (kept until `snap:delete()`)
function Vm:snapshot(path)
  local ud = ud_of(self, "vm:snapshot")
  local lines, files, tails = open_handles(ud)
  if #lines > 0 then
    local _, name = ud:name()
    error(string.format(
      "vm:snapshot: vm %q has %d open file(s) and %d open tail(s); close them before snapshotting:\n%s",
      name, files, tails, table.concat(lines, "\n")), 2)
  end
  return setmetatable({ [UD] = check(ud:snapshot(path)) }, Snapshot)
end

--- Starts this VM from a snapshot (a Snapshot or its directory); returns
-- the VM once the agent answered. A booted VM is rolled back: its machine is
-- replaced, and Files, Tails, Processes and Workers of that machine raise.
-- @param opts optional `{timeout=}`
function Vm:restore(snap, opts)
  local ud = ud_of(self, "vm:restore")
  local arg = snap
  if getmetatable(snap) == Snapshot then arg = rawget(snap, UD) end
  check(ud:restore(arg, opts))
  return self
end

Vm.__close = function(self) self:close() end
Vm.__tostring = function(self)
  local ud = rawget(self, UD)
  local _, name = ud:name()
  local _, state = ud:state()
  return string.format("vm(%s state=%s)", name, state)
end

-- Scopes ------------------------------------------------------------------
-- Every File, Tail, Process and Worker registers with the innermost scope.
-- The root scope holds them weakly (so the garbage collector can still close
-- what a program forgets); `provium.scope` and test scopes hold them until
-- they end, then close them in reverse order.
local scopes = { setmetatable({}, { __mode = "v" }) }
local scope_len = { 0 }

local function register(obj)
  local i = #scopes
  scope_len[i] = scope_len[i] + 1
  scopes[i][scope_len[i]] = obj
  return obj
end

local function close_scope(i)
  local s = scopes[i]
  for k = scope_len[i], 1, -1 do
    local obj = s[k]
    if obj then pcall(obj.close, obj) end
    s[k] = nil
  end
  scope_len[i] = 0
end

--- Runs `fn(...)` and closes every File, Tail, Process and Worker it created,
-- in reverse order, even when it raises. Returns what `fn` returned.
function M.scope(fn, ...)
  if type(fn) ~= "function" then
    error("provium.scope: fn must be a function (got " .. type(fn) .. ")", 2)
  end
  scopes[#scopes + 1] = {}
  scope_len[#scopes] = 0
  local res = table.pack(pcall(fn, ...))
  close_scope(#scopes)
  scopes[#scopes] = nil
  scope_len[#scope_len] = nil
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- Opens a test scope (busted's before_each does this).
function M.open_test_scope()
  scopes[#scopes + 1] = {}
  scope_len[#scopes] = 0
end

--- Closes the innermost test scope (or, when none is open, everything the
-- root scope still holds).
function _provium_close_test_scope()
  if #scopes > 1 then
    close_scope(#scopes)
    scopes[#scopes] = nil
    scope_len[#scope_len] = nil
  else
    close_scope(1)
  end
end
M.close_test_scope = _provium_close_test_scope

-- Resource classes -----------------------------------------------------------
local function own(self, class, call)
  if getmetatable(self) ~= class then
    local what = class.__name:gsub("^provium%.", "")
    if what == "Vm" then what = "VM" end
    error(string.format("%s: expected a %s (call it with a colon, got %s)", call, what, type(self)), 3)
  end
  return rawget(self, UD)
end

local function wrap(class, ud)
  return register(setmetatable({ [UD] = ud }, class))
end

local function resource_class(name, label, methods, returns)
  local C = { __name = "provium." .. name }
  C.__index = C
  for _, m in ipairs(methods) do
    local call = label .. ":" .. m
    local result_class = returns and returns[m]
    C[m] = function(self, ...)
      local ud = own(self, C, call)
      if result_class then
        local obj = wrap(result_class(), check(ud[m](ud, ...)))
        return track(obj, self, "tail")
      end
      if m == "close" and origin[self] then origin[self].closed = true end
      return check(ud[m](ud, ...))
    end
  end
  C.__close = function(self) self:close() end
  C.__gc = function(self) local ud = rawget(self, UD) if ud then pcall(ud.close, ud) end end
  return C
end

--- A Tail: `next(timeout?)`, `read_until(delim, timeout?)`, `expect(pattern,
-- timeout?)`, `drain(timeout?)`, `eof()`, `close()`. Default timeout 10 s
-- (drain: 0.5 s). Patterns are plain substrings.
local Tail = resource_class("Tail", "tail", { "next", "read_until", "expect", "drain", "eof", "close" })
Tail.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return "tail(" .. tostring(what) .. ")"
end
M.Tail = Tail

--- A File: `read(n)`, `read_all()`, `write(data)`, `seek(off, whence?)`,
-- `tell()`, `close()`, `fd()`, `tail_stream()`.
local File = resource_class("File", "file",
  { "read", "read_all", "write", "seek", "tell", "close", "fd", "tail_stream" },
  { tail_stream = function() return Tail end })
File.__tostring = function(self)
  local ud = rawget(self, UD)
  local _, fd = ud:fd()
  if fd == 0 then return "file(closed)" end
  local _, path = ud:path()
  return string.format("file(handle#%d %q)", fd, path)
end
M.File = File

--- A Process (`run_async`): `wait(timeout?)`, `kill(sig?)`, `signal(sig)`,
-- `pid()`, `status()`, `stdin_write(data)`, `close_stdin()`,
-- `stdout_stream()`, `stderr_stream()`, `close()`.
local Process = resource_class("Process", "proc",
  { "kill", "signal", "pid", "handle", "status", "stdin_write", "close_stdin", "stdout_stream",
    "stderr_stream", "close" },
  { stdout_stream = function() return Tail end, stderr_stream = function() return Tail end })
function Process:wait(timeout)
  local ud = own(self, Process, "proc:wait")
  return setmetatable(check(ud:wait(timeout)), RunResult)
end
Process.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return "process(" .. tostring(what) .. ")"
end
M.Process = Process

-- Guest operations, shared by VMs and workers -------------------------------
local Worker

-- File objects passed where a handle id is expected (fd_stream, ioctl).
local function unwrap_file(v)
  if getmetatable(v) == File then return rawget(v, UD) end
  return v
end

local function guest_ops(C, label)
  local function op(name)
    local call = label .. ":" .. name
    return function(self, ...)
      return check(own(self, C, call):call(name, ...))
    end
  end
  for _, name in ipairs({ "read_file", "write_file", "stat", "listdir", "mkdir", "unlink", "rename", "syscall" }) do
    C[name] = op(name)
  end
  local raw_run = op("run")
  --- Runs a command: `run("sh command")`, `run(prog, {args...})` or
  -- `run(prog, {args=, env=, env_clear=, cwd=, stdin=, timeout=})` → RunResult.
  function C:run(...)
    return setmetatable(raw_run(self, ...), RunResult)
  end
  local raw_open = op("open_file")
  --- Opens a file → File. `mode`: `{read=, write=, append=, create=, truncate=, exclusive=, perm=}`.
  function C:open_file(...) return track(wrap(File, raw_open(self, ...)), self, "file") end
  local raw_tail = op("tail_file")
  --- Follows a file → Tail. `opts.start`: "end" (default), "beginning"/"start", or a byte offset.
  function C:tail_file(...) return track(wrap(Tail, raw_tail(self, ...)), self, "tail") end
  local raw_fd_stream = op("fd_stream")
  --- Follows an open File (or handle id) from its cursor → Tail.
  function C:fd_stream(f, ...)
    return track(wrap(Tail, raw_fd_stream(self, unwrap_file(f), ...)), self, "tail")
  end
  local raw_ioctl = op("ioctl")
  --- `ioctl(fd_or_file, cmd, data?, {bufs=, ptr_offsets=}?)` → `{ret, out_data, out_bufs}`.
  function C:ioctl(f, ...) return raw_ioctl(self, unwrap_file(f), ...) end
  local raw_async = op("run_async")
  --- Starts a command (same forms as run; no timeout) → Process.
  function C:run_async(...) return track(wrap(Process, raw_async(self, ...)), self, "process") end

  --- Records operations with `fn(b)` and runs them in one round trip.
  -- Returns `{ {ok=value} | {err=error}, ... }` in call order.
  function C:batch(fn)
    local ud = own(self, C, label .. ":batch")
    if type(fn) ~= "function" then
      error(label .. ":batch: fn must be a function (got " .. type(fn) .. ")", 2)
    end
    local recorded = {}
    local b = {}
    for _, name in ipairs({ "read_file", "write_file", "stat", "listdir", "mkdir", "unlink", "rename", "run", "syscall" }) do
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
      if type(r.err) == "table" then setmetatable(r.err, GuestError) end
      if recorded[i][1] == "run" and r.ok then setmetatable(r.ok, RunResult) end
    end
    return results
  end
end

guest_ops(Vm, "vm")

--- A Worker (`vm:spawn_worker`): the guest operations, run by a separate
-- agent process with its own credentials and namespaces; plus `kill(sig?)`,
-- `join()` → exit status, `close()`.
Worker = resource_class("Worker", "worker", { "kill", "join", "handle", "close" })
guest_ops(Worker, "worker")
Worker.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return tostring(what)
end
M.Worker = Worker

local raw_spawn = function(self, ...) return check(ud_of(self, "vm:spawn_worker"):call("spawn_worker", ...)) end
--- Starts a worker. `opts`: `{uid=, gid=, groups={...}, cwd=, unshare={"mount", "net", "pid", "ipc", "uts"}}`.
function Vm:spawn_worker(...) return track(wrap(Worker, raw_spawn(self, ...)), self, "worker") end

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
local function push_file(self, host_path, guest_path, opts)
  local mt = getmetatable(self)
  if mt ~= Vm and mt ~= Worker then
    error("push_file: expected a VM or a Worker (call it with a colon, got " .. type(self) .. ")", 2)
  end
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
Vm.push_file = push_file
Worker.push_file = push_file

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

--- A Tail over the live console (from now on).
function Console:read()
  return wrap(Tail, check(rawget(self, UD):console_tail()))
end

function Vm:console()
  return setmetatable({ [UD] = ud_of(self, "vm:console") }, Console)
end

-- The VMs of this Lua state, by name and in creation order. VMs that are
-- not closed are held here; closed ones only weakly (plus the last few, so
-- that a lookup right after a close still finds them): a suite that
-- creates a VM per test must not keep every one of them.
local live = {}
local closed = setmetatable({}, { __mode = "v" })
local recently_closed = {}
local RECENTLY_CLOSED = 16
local order, ordered, order_limit = {}, {}, 64

local function find_vm(name)
  return live[name] or closed[name]
end

-- Called once a VM is closed: keeps it only weakly from now on.
retire_vm = function(vm)
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
      if find_vm(n) then kept[#kept + 1] = n else ordered[n] = nil end
    end
    order = kept
    order_limit = math.max(64, 2 * #order)
  end
end

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
    local vm = find_vm(name)
    if not vm then error(string.format("provium:vm: no VM named %q", name), 0) end
    return vm
  end
  local old = type(name) == "string" and find_vm(name)
  if old then
    local state = old:state()
    if state == "created" or state == "booted" or state == "paused" then
      error(string.format("provium:vm: a VM named %q already exists (state %s)", name, state), 0)
    end
    old:close()
  end
  local ud = check(core.new_vm(name, profile, opts))
  local vm = setmetatable({ [UD] = ud }, Vm)
  if type(name) == "string" then
    remember_name(name)
    closed[name] = nil
    live[name] = vm
  end
  return vm
end

--- Boots every created VM concurrently; returns provium.
function M:boot()
  module_self(self, "provium:boot")
  local list = {}
  for _, name in ipairs(order) do
    local vm = live[name]
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
    if find_vm(name) then names[#names + 1] = name end
  end
  return names
end

--- Shuts every VM down.
function M:shutdown()
  module_self(self, "provium:shutdown")
  for _, name in ipairs(order) do
    local vm = live[name]
    if vm then vm:shutdown() end
  end
end

-- Fixtures ------------------------------------------------------------------

local fixture_count = 0
local evicted = false
-- Keys of the fixture builds in progress (a builder may use other fixtures).
local building = {}

--- Runs the builder file and returns the Snapshot it returns; closes the
-- VMs the builder created (the snapshot holds what they were).
local function build_fixture(builder, hex)
  local before = {}
  for _, vm in pairs(live) do before[vm] = true end
  local chunk, lerr = loadfile(builder)
  if not chunk then
    error("provium.vm_fixture: cannot load " .. builder .. ": " .. tostring(lerr), 0)
  end
  building[#building + 1] = hex
  local stage = check(core.fixture_stage(hex))
  io.stderr:write("provium: building fixture " .. builder .. "\n")
  local t0 = core.now()
  local ok, snap = xpcall(chunk, debug.traceback)
  -- Snapshots of an enclosing build go to its staging directory again.
  building[#building] = nil
  check(core.fixture_stage(building[#building]))
  for _, vm in pairs(live) do
    if not before[vm] then pcall(vm.close, vm) end
  end
  if not ok then
    pcall(core.fixture_unstage, stage)
    error("provium.vm_fixture: the builder " .. builder .. " failed: " .. tostring(snap), 0)
  end
  if getmetatable(snap) ~= Snapshot then
    pcall(core.fixture_unstage, stage)
    error(string.format(
      "provium.vm_fixture: the builder %s must return a Snapshot (return vm:snapshot()), got %s",
      builder, type(snap) == "table" and "a table" or tostring(snap)), 0)
  end
  io.stderr:write(string.format("provium: fixture %s built in %.1f s\n", builder, core.now() - t0))
  return snap, stage
end

--- A booted VM resumed from the fixture built by `path .. ".fixture.lua"`
-- (relative to the calling file). The builder runs on first use and must
-- return a Snapshot; later calls (in any process) resume the cached one
-- until the builder or anything it depends on changes.
function M.vm_fixture(a, b)
  local path = a
  if a == M then path = b end
  if type(path) ~= "string" or path == "" then
    error("provium.vm_fixture: path must be a non-empty string (got " .. type(path) .. ")", 2)
  end
  local builder = path
  if builder:sub(1, 1) ~= "/" then builder = caller_dir(2) .. "/" .. builder end
  builder = builder .. ".fixture.lua"
  local f = io.open(builder, "rb")
  if not f then
    error("provium.vm_fixture: no fixture builder at " .. builder, 2)
  end
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
        io.stderr:write("provium: warning: rebuilding fixture " .. builder .. ": " .. tostring(why) .. "\n")
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
      if not dir then
        local snap, stage = build_fixture(builder, key.hex)
        dir = check(core.fixture_install(key.hex, rawget(snap, UD), builder, key.manifest))
        pcall(core.fixture_unstage, stage)
      end
    end)
    lock:release()
    if not ok then error(err, 0) end
  end
  fixture_count = fixture_count + 1
  local name = string.format("fixture:%s#%d", path, fixture_count)
  local vm = M:vm(name, "default")
  vm:restore(dir)
  return vm
end

--- Declares a host file a fixture depends on. Read by the fixture scanner
-- (a literal path only); does nothing at run time.
function M.depends_on_file(a, b)
  -- Both provium:depends_on_file("x") and provium.depends_on_file("x").
  local path = a
  if a == M then path = b end
  if type(path) ~= "string" or path == "" then
    error("provium:depends_on_file: path must be a non-empty string (got " .. type(path) .. ")", 2)
  end
end

--- The fixture cache: `dir()`, `list()` → `{ {key=, path=, size=, last_used=, builder=}, ... }`
-- (least recently used first), `remove(key)` → whether there was such an
-- entry, `clean()` → number of entries removed (entries being built are kept). Location: `$PROVIUM_FIXTURE_CACHE`, else
-- `$XDG_CACHE_HOME/provium/fixtures`; size cap `$PROVIUM_FIXTURE_CACHE_MAX`
-- (default 20G), least recently used entries evicted first.
M.fixtures = {
  dir = function() return check(core.fixture_cache_dir()) end,
  list = function() return check(core.fixture_list()) end,
  remove = function(key)
    if type(key) ~= "string" then
      error("provium.fixtures.remove: key must be a string (got " .. type(key) .. ")", 2)
    end
    return check(core.fixture_remove(key))
  end,
  clean = function() return check(core.fixture_clean()) end,
}

--- Builds (or finds in the cache) the default guest image; returns
-- `{kernel=, initrd=, key=, kernel_release=, kernel_package=}`.
function M.prepare_default_guest()
  return check(core.prepare_default_guest())
end

--- What this host offers VMs, as detected now.
-- @treturn table `{kind=, accel=, accel_reason=, vsock=, vsock_reason=,
--   transport=, transport_reason=}`: `kind` is one of `kvm-kernel-vsock`,
--   `kvm-vhost-user`, `tcg-kernel-vsock`, `tcg-vhost-user`; `accel` is `kvm`
--   or `tcg`; `vsock` is `kernel` or `vhost-user`; `transport` is the one a
--   VM gets when it names none; each `*_reason` says why.
function M.host()
  return check(core.host())
end

--- Monotonic time in seconds (fractional), for timing in tests and benchmarks.
M.now = core.now

M.version = core.version
M._VERSION = core.version
M.protocol_version = core.protocol_version

-- Module functions work with a dot or a colon: `provium.vm(...)` and
-- `provium:vm(...)` are the same call. The wrappers tail-call, so error
-- levels still point at the caller.
do
  local with_self = { vm = true, boot = true, vm_names = true, shutdown = true }
  for name, f in pairs(M) do
    if type(f) == "function" then
      if with_self[name] then
        M[name] = function(...)
          if (...) == M then return f(...) end
          return f(M, ...)
        end
      else
        M[name] = function(...)
          if (...) == M then return f(select(2, ...)) end
          return f(...)
        end
      end
    end
  end
end
M._core = core
M._UD = UD

return M
