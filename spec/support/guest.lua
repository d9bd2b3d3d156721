-- Shared helpers for the specs: one booted default guest per spec file.
local provium = require("provium")

local M = {}

--- Creates and boots a default guest named `name` (unique per spec file).
function M.boot(name, opts)
  local vm = provium:vm(name, "default", opts)
  vm:boot()
  return vm
end

--- Returns the error raised by `fn` (fails the test when nothing is raised).
function M.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, got none")
  return err
end

return M
