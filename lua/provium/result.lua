--- RunResult: what `vm:run` and `proc:wait` return.
-- Fields `exit_code` (-1 when signalled, -2 when timed out), `stdout`,
-- `stderr`, `status` ("exited", "signalled", "timed_out"), `signal`,
-- `timed_out`, and `command` (the command line, for messages).
-- @classmod provium.RunResult

local errors = require("provium.errors")
errors.own_module()

local RunResult = { __name = "provium.RunResult" }
RunResult.__index = RunResult

-- result -> core userdata of the VM that ran it (for console tails in
-- assertion messages). Weak keys: the result stays a plain table.
local vm_of = setmetatable({}, { __mode = "k" })

--- Makes `t` a RunResult of the VM whose core userdata is `vm_ud`.
function RunResult._adopt(t, vm_ud)
  if vm_ud then vm_of[t] = vm_ud end
  return setmetatable(t, RunResult)
end

--- The core userdata of the VM that ran `r`, if known.
function RunResult._vm_ud(r)
  return vm_of[r]
end

--- True when the process exited with status 0.
function RunResult:ok()
  return self.status == "exited" and self.exit_code == 0
end

--- How the process ended, in words: "exited with code 1", "killed by
-- signal 9", "timed out".
function RunResult:describe()
  if self.status == "exited" then
    return "exited with code " .. tostring(self.exit_code)
  elseif self.status == "signalled" then
    return "killed by signal " .. tostring(self.signal)
  end
  return "timed out"
end

local function indent(label, text)
  if text == nil or text == "" then return "  " .. label .. ": (empty)" end
  local body = text:gsub("\n$", "")
  return "  " .. label .. ":\n    " .. body:gsub("\n", "\n    ")
end

--- A multi-line report of the result: the command, how it ended, stdout
-- and stderr verbatim (indented).
function RunResult:report(msg)
  local head = string.format("%s%s %s", msg and (msg .. ": ") or "",
    self.command and ("command " .. self.command) or "command", RunResult.describe(self))
  return table.concat({ head, indent("stdout", self.stdout), indent("stderr", self.stderr) }, "\n")
end

--- Raises unless `ok()`; returns the result otherwise. The message names
-- the command and shows its output verbatim.
-- @param msg optional prefix for the message
function RunResult:assert_ok(msg)
  if RunResult.ok(self) then return self end
  errors.raisef("%s", RunResult.report(self, msg))
end

RunResult.__tostring = function(r)
  local status = r.status
  if r.status == "exited" then status = status .. " code=" .. tostring(r.exit_code) end
  if r.status == "signalled" then status = status .. " signal=" .. tostring(r.signal) end
  return string.format("RunResult{ status=%s, stdout=<%dB>, stderr=<%dB> }", status, #r.stdout, #r.stderr)
end

return RunResult
