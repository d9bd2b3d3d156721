--- Errors: how provium raises, and where.
--
-- Core functions return `true, results...` or `false, err`; `check` raises
-- `err` as a plain string or as a `GuestError` table, never as a foreign
-- userdata, so `pcall`, `err.code`, `tostring(err)` and busted's error
-- assertions behave as Lua programmers expect.
--
-- A string error starts with the `file:line` of the call in the user's code
-- (the first frame outside provium's own modules), as `error(msg, 2)` would
-- in a function the user called directly.
-- @module provium.errors

local M = {}

-- Sources (`debug.getinfo().source`) of provium's own Lua modules.
local own_sources = {}

--- Marks the calling module as part of provium: its frames are skipped when
-- looking for the user's call site.
function M.own_module()
  own_sources[debug.getinfo(2, "S").source] = true
end
M.own_module()

--- Debug info of the innermost Lua frame outside provium; nil when there is
-- none.
local function user_frame()
  for l = 3, 80 do
    local info = debug.getinfo(l, "Sl")
    if not info then return nil end
    if info.what ~= "C" and not own_sources[info.source] then return info end
  end
  return nil
end

--- `file:line` of the user's call into provium, or "?".
function M.site()
  local info = user_frame()
  if not info then return "?" end
  return info.short_src .. ":" .. tostring(info.currentline)
end

--- Directory of the Lua file that called into provium (for relative host
-- paths); "." when the caller is not a file.
function M.caller_dir()
  local info = user_frame()
  local src = info and info.source
  if src and src:sub(1, 1) == "@" then
    return src:sub(2):match("^(.*)/[^/]*$") or "."
  end
  return "."
end

--- Error raised for guest OS failures.
-- Fields: `op` (e.g. "vm:read_file"), `path`, `errno`, `code` ("ENOENT"),
-- `message` ("No such file or directory"), `call` (the call with arguments),
-- `where` (`file:line` of the call).
-- `tostring(err)` reads `vm:read_file("/nope"): ENOENT: No such file or directory`;
-- string methods work on it (`err:match("ENOENT")`).
local GuestError = { __name = "provium.GuestError" }
GuestError.__tostring = function(e)
  return string.format("%s: %s: %s", e.call or e.op, e.code, e.message)
end
GuestError.__index = function(_, k)
  local f = string[k]
  if f then
    return function(self, ...) return f(tostring(self), ...) end
  end
end
GuestError.__concat = function(a, b) return tostring(a) .. tostring(b) end
M.GuestError = GuestError

--- Raises `e` (a message or a guest error table) at the user's call site.
function M.raise(e)
  if type(e) == "table" then
    setmetatable(e, GuestError)
    if rawget(e, "where") == nil then rawset(e, "where", M.site()) end
    error(e, 0)
  end
  error(M.site() .. ": " .. tostring(e), 0)
end

--- Passes `true, ...` through as `...`; raises the error of `false, err`.
function M.check(ok, ...)
  if ok then return ... end
  M.raise((...))
end

--- Raises a formatted message at the user's call site.
function M.raisef(fmt, ...)
  error(M.site() .. ": " .. string.format(fmt, ...), 0)
end

--- Raises unless `v` has Lua type `want`: "<call>: <name> must be a <want> (got <type>)".
function M.want(call, name, v, want)
  if type(v) ~= want then
    M.raisef("%s: %s must be a %s (got %s)", call, name, want, type(v))
  end
  return v
end

return M
