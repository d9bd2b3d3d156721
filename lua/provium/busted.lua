--- busted integration: `require("provium.busted")` in a spec file (or a
-- helper loaded with `--helper`).
--
-- * Every test runs in its own provium scope: Files, Tails, Processes and
--   Workers it opens are closed when it ends (`_provium_close_test_scope`).
-- * The luassert assertions of `provium.assertions` are registered
--   (`assert.ok(result)`, `assert.exit_code(0, result)`,
--   `assert.guest_file(vm, path).contains(text)`, `assert.errno("ENOENT", fn, ...)`).
-- * The message of a failing test ends with the console tail of every live
--   VM (once, in the failure report, unless the message already has one).
-- @module provium.busted

local provium = require("provium")
local busted = require("busted")
local object = require("provium.object")
local Console = require("provium.console")
require("provium.assertions")

local M = {}

--- Console lines per VM in a failure message.
M.console_lines = 20

-- The console tails of the live VMs, as a message suffix.
local function console_tails()
  local parts = {}
  for _, name in ipairs(provium.vm_names()) do
    local ok, vm = pcall(provium.vm, name)
    if ok then
      local ud = rawget(vm, object.UD)
      local state_ok, state = ud:state()
      if state_ok and state ~= "created" and state ~= "shutdown" then
        local s = Console._section(ud, M.console_lines)
        if s ~= "" then parts[#parts + 1] = s end
      end
    end
  end
  if #parts == 0 then return "" end
  return "\n" .. table.concat(parts, "\n")
end

--- Appends the console tails to a failure or error message (busted calls
-- this through the file's `rewriteMessage` hook).
function M.rewrite_message(msg)
  if type(msg) ~= "string" or msg:find(Console._MARK, 1, true) then return msg end
  local ok, tails = pcall(console_tails)
  if not ok then return msg end
  return msg .. tails
end

-- Hooks rewriteMessage of the file element that `element` belongs to.
local hooked = setmetatable({}, { __mode = "k" })
local function hook_file(element)
  local node = element
  while node do
    if node.descriptor == "file" then break end
    node = busted.parent(node)
  end
  local run = node and node.run
  if type(run) ~= "table" or hooked[run] then return end
  hooked[run] = true
  local previous = rawget(run, "rewriteMessage")
  rawset(run, "rewriteMessage", function(name, msg)
    if previous then msg = previous(name, msg) end
    return M.rewrite_message(msg)
  end)
end

busted.subscribe({ "test", "start" }, function(element)
  pcall(hook_file, element)
  provium.open_test_scope()
  return nil, true
end)

busted.subscribe({ "test", "end" }, function()
  provium.close_test_scope()
  return nil, true
end)

return M
