--- Scopes: every File, Tail, Process and Worker registers with the innermost
-- scope. The root scope holds them weakly (the garbage collector still
-- closes what a program forgets); `provium.scope` and test scopes hold them
-- until they end, then close them in reverse order.
-- @module provium.scope

local errors = require("provium.errors")
errors.own_module()

local M = {}

local scopes = { setmetatable({}, { __mode = "v" }) }
local scope_len = { 0 }

--- Registers `obj` (anything with a `close` method) with the innermost
-- scope; returns it.
function M.register(obj)
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

local function push()
  scopes[#scopes + 1] = {}
  scope_len[#scopes] = 0
end

local function pop()
  close_scope(#scopes)
  scopes[#scopes] = nil
  scope_len[#scope_len] = nil
end

--- Runs `fn(...)` and closes every File, Tail, Process and Worker it
-- created, in reverse order, even when it raises. Returns what `fn` returned.
function M.scope(fn, ...)
  errors.want("provium.scope", "fn", fn, "function")
  push()
  local res = table.pack(pcall(fn, ...))
  pop()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- Opens a test scope (`provium.busted` does this before each test).
function M.open_test_scope()
  push()
end

--- Closes the innermost test scope (or, when none is open, everything the
-- root scope still holds).
function M.close_test_scope()
  if #scopes > 1 then
    pop()
  else
    close_scope(1)
  end
end

-- The one global provium defines: the hook a test runner calls after each
-- test (the user's page names it).
_provium_close_test_scope = M.close_test_scope

return M
