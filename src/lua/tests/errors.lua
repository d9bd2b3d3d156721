-- Guest errors: plain tables with the GuestError metatable, naming the call,
-- the path, the errno and where the user called.
local T = {}

function T.missing_file_is_a_guest_error(vm, dir)
  local path = dir .. "/nope"
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(function() return vm:read_file(path) end)
  eq(ok, false)
  eq(type(err), "table")
  eq(getmetatable(err), provium.GuestError)
  eq(err.op, "vm:read_file")
  eq(err.path, path)
  eq(err.code, "ENOENT")
  eq(err.errno, 2)
  eq(err.message, "No such file or directory")
  contains(err.where, "errors.lua:" .. line)
  eq(tostring(err), string.format('vm:read_file(%q): ENOENT: No such file or directory', path))
  -- String methods work on it, and it concatenates.
  eq(err:match("ENOENT"), "ENOENT")
  contains("x " .. err, "ENOENT")
end

function T.errno_of_each_op(vm, dir)
  vm:write_file(dir .. "/f", "x")
  local cases = {
    { "EEXIST", function() vm:mkdir(dir .. "/f") end },
    { "ENOTDIR", function() vm:listdir(dir .. "/f") end },
    { "ENOENT", function() vm:unlink(dir .. "/missing") end },
    { "ENOENT", function() vm:rename(dir .. "/missing", dir .. "/g") end },
    { "ENOENT", function() vm:chmod(dir .. "/missing", 420) end },
    { "EEXIST", function() vm:symlink("x", dir .. "/f") end },
    { "EISDIR", function() vm:read_file(dir) end },
    { "ENOENT", function() vm:open_file(dir .. "/missing", { read = true }) end },
  }
  for i, c in ipairs(cases) do
    local ok, err = pcall(c[2])
    if ok then error("case " .. i .. ": no error") end
    if type(err) ~= "table" or err.code ~= c[1] then
      error(string.format("case %d: expected %s, got %s", i, c[1], tostring(err)))
    end
  end
end

function T.syscall_reports_errno_without_raising(vm)
  -- close(-1) → EBADF
  local r = vm:syscall(3, -1)
  eq(r.ret, -1)
  eq(r.errno, 9)
end

function T.ops_work_after_an_error(vm, dir)
  pcall(vm.read_file, vm, dir .. "/nope")
  vm:write_file(dir .. "/ok", "fine")
  eq(vm:read_file(dir .. "/ok"), "fine")
end

return T
