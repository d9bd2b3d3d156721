-- Shared helpers for the specs: one booted default guest per spec file.
local provium = require("provium")

local M = {}

--- Creates and boots a default guest named `name` (unique per spec file).
function M.boot(name, opts)
  local vm = provium:vm(name, "default", opts)
  vm:boot()
  return vm
end

--- Runs a shell command → its output (stdout and stderr) and exit code.
function M.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

--- Writes `text` to the host file `path`.
function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- The content of the host file `path`, or "" when there is none.
function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

--- Returns the error raised by `fn` (fails the test when nothing is raised).
function M.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, got none")
  return err
end

--- The pid of the QEMU whose VM is named `name` (its `-name provium:<name>`),
-- or nil when there is none.
function M.qemu_pid(name)
  local p = io.popen("ps -eo pid=,args=")
  local want = "-name provium:" .. name .. " "
  for line in p:lines() do
    local pid, args = line:match("^%s*(%d+)%s+(.*)$")
    if args and args:find("qemu-system", 1, true) and args:find(want, 1, true) then
      p:close()
      return pid
    end
  end
  p:close()
  return nil
end

--- MiB of guest RAM the host holds for the QEMU `pid`: the allocated blocks
-- of the guest RAM memfd it maps (pages a restore wrote count too).
function M.guest_ram_mib(pid)
  local p = io.popen("for f in /proc/" .. pid .. "/fd/*; do case $(readlink $f) in "
    .. "*provium-guest-ram*) stat -L -c '%b %B' $f; break;; esac; done")
  local blocks, unit = (p:read("a") or ""):match("(%d+) (%d+)")
  p:close()
  assert(blocks, "no guest RAM memfd in QEMU " .. pid)
  return tonumber(blocks) * tonumber(unit) / 2^20
end

return M
