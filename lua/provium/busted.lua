--- busted integration: `require("provium.busted")` in a spec file (or a
-- helper loaded with `--helper`).
--
-- * Every test runs in its own provium scope: Files, Tails, Processes and
--   Workers it opens are closed when it ends (`_provium_close_test_scope`).
-- * After a failing test, prints the tail of every booted VM's console so the
--   guest's view of the failure is right there in the output.
-- @module provium.busted

local provium = require("provium")
local busted = require("busted")

local M = {}

local function console_tails()
  local parts = {}
  for _, name in ipairs(provium:vm_names()) do
    local vm = provium:vm(name)
    local ok, log = pcall(function() return vm:console():read_log() end)
    if ok and log and #log > 0 then
      local lines = {}
      for line in log:gmatch("[^\n]*") do lines[#lines + 1] = line end
      local first = math.max(1, #lines - 20)
      parts[#parts + 1] = string.format("--- console of vm %q (last lines) ---\n%s",
        name, table.concat(lines, "\n", first))
    end
  end
  return table.concat(parts, "\n")
end

busted.subscribe({ "test", "start" }, function()
  provium.open_test_scope()
  return nil, true
end)

busted.subscribe({ "test", "end" }, function(element, parent, status)
  _provium_close_test_scope()
  if status == "failure" or status == "error" then
    local tails = console_tails()
    if #tails > 0 then io.stderr:write("\n", tails, "\n") end
  end
  return nil, true
end)

return M
