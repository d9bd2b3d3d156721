--- The serial console of a VM (`vm:console()`).
-- @classmod provium.Console

local errors = require("provium.errors")
errors.own_module()
local object = require("provium.object")
local handles = require("provium.handles")

local check, UD = errors.check, object.UD

local Console = { __name = "provium.Console" }
Console.__index = Console

local function ud_of(self, call) return object.own(self, Console, call) end

--- The whole serial log so far (the last 1 MiB or more).
function Console:read_log() return check(ud_of(self, "console:read_log"):console_log()) end

--- Waits until `pattern` (a plain substring) appears on the console;
-- returns it.
-- @param timeout duration, default 30 s
function Console:expect(pattern, timeout)
  check(ud_of(self, "console:expect"):console_expect(pattern, timeout))
  return pattern
end

--- A Tail over the live console (from now on).
function Console:read()
  return object.wrap(handles.Tail, check(ud_of(self, "console:read"):console_tail()))
end

--- The last `n` lines of the log (default 30), without lines that are
-- noise of the virtual machine every guest shares.
function Console:tail(n)
  return check(ud_of(self, "console:tail"):console_lines(n))
end

Console.__tostring = function(self)
  local _, name = rawget(self, UD):name()
  return "console(" .. tostring(name) .. ")"
end

--- Marks where a console tail starts in a message.
Console._MARK = "--- guest console"

--- A message section with the console tail of the VM whose core userdata
-- is `ud`: `--- guest console of vm "name" (last n lines) ---` and the
-- lines; "" when the VM has printed nothing.
function Console._section(ud, n)
  n = n or 30
  local ok, text = ud:console_lines(n)
  if not ok or text == nil or text:match("^%s*$") then return "" end
  local _, name = ud:name()
  return string.format("%s of vm %q (last %d lines) ---\n%s", Console._MARK, tostring(name), n, text)
end

--- The Console of the VM whose core userdata is `ud`.
function Console._of(ud)
  return setmetatable({ [UD] = ud }, Console)
end

return Console
