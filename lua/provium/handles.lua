--- The guest-side handles: File (`vm:open_file`), Tail (`vm:tail_file`,
-- `file:tail_stream`, a process's streams, the console) and Process
-- (`vm:run_async`). Each is closed by `close()`, by `<close>`, by the scope
-- that created it, or by the garbage collector.
-- @module provium.handles

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")
local RunResult = require("provium.result")

local UD = object.UD
local M = {}

--- A Tail: `next(timeout?)`, `read_until(delim, timeout?)`,
-- `expect(pattern, timeout?)`, `drain(timeout?)`, `eof()`, `close()`.
-- Default timeout 10 s (drain: 0.5 s). Patterns are plain substrings.
local Tail = object.resource_class("Tail", "tail",
  { "next", "read_until", "expect", "drain", "eof", "close" })
Tail.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return "tail(" .. tostring(what) .. ")"
end
M.Tail = Tail

local function tail_class() return Tail end

--- A File: `read(n)`, `read_all()`, `write(data)`, `seek(off, whence?)`,
-- `tell()`, `close()`, `fd()`, `tail_stream()`.
local File = object.resource_class("File", "file",
  { "read", "read_all", "write", "seek", "tell", "close", "fd", "tail_stream" },
  { tail_stream = tail_class })
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
local Process = object.resource_class("Process", "proc",
  { "kill", "signal", "pid", "handle", "status", "stdin_write", "close_stdin",
    "stdout_stream", "stderr_stream", "close" },
  { stdout_stream = tail_class, stderr_stream = tail_class })

--- Waits for the process → RunResult. Default timeout 600 s (`false`:
-- none); on timeout the process group is killed and the result has
-- `timed_out = true`.
function Process:wait(timeout)
  local ud = object.own(self, Process, "proc:wait")
  return RunResult._adopt(errors.check(ud:wait(timeout)), object.vm_of(self))
end
Process.__tostring = function(self)
  local _, what = rawget(self, UD):describe()
  return "process(" .. tostring(what) .. ")"
end
M.Process = Process

return M
