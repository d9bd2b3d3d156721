-- Argument handling: every bad argument is a Lua error that names the call,
-- the argument and what was given, at the caller's line; nothing reaches the
-- agent.
local T = {}

function T.wrong_type_names_call_and_argument(vm)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(function() vm:write_file(42, "data") end)
  eq(ok, false)
  contains(err, "vm:write_file: path must be a path string (got 42)")
  -- The error is located at the user's call, not inside provium.
  contains(err, "arguments.lua:" .. line .. ":")
end

function T.dot_call_is_explained(vm)
  local err = raises(vm.stat, "/")
  contains(err, "vm:stat: expected a VM (call it with a colon: vm:stat(...); got string)")
end

function T.empty_path_is_refused(vm)
  contains(raises(vm.read_file, vm, ""), "vm:read_file: path must not be empty")
end

function T.nul_in_path_is_refused(vm, dir)
  contains(raises(vm.stat, vm, dir .. "/a\0b"), "vm:stat: path")
end

function T.unknown_option_suggests_the_known_one(vm, dir)
  local err = raises(vm.write_file, vm, dir .. "/x", "d", { prem = 420 })
  contains(err, 'vm:write_file: unknown option "prem"')
  contains(err, 'did you mean "perm"?')
end

function T.octal_string_modes(vm, dir)
  vm:write_file(dir .. "/m", "x", { perm = "0640" })
  eq(vm:stat(dir .. "/m").mode & 4095, 416)
  contains(raises(vm.chmod, vm, dir .. "/m", "0999"), "vm:chmod: mode")
  contains(raises(vm.chmod, vm, dir .. "/m", -1), "vm:chmod: mode")
  vm:chmod(dir .. "/m", 384)
  eq(vm:stat(dir .. "/m").mode & 4095, 384)
end

function T.run_arguments(vm)
  contains(raises(vm.run, vm), "vm:run: ")
  contains(raises(vm.run, vm, { "true" }), "vm:run: command must be a string (got a table)")
  contains(raises(vm.run, vm, "true", { timeout = -1 }), "vm:run: ")
  contains(raises(vm.run, vm, "true", { bogus = 1 }), 'unknown option "bogus"')
  contains(raises(vm.run, vm, "true", { args = { 1, {} } }), "vm:run: ")
end

function T.batch_needs_a_function(vm)
  contains(raises(vm.batch, vm, 3), "vm:batch: fn must be")
end

function T.batch_entry_errors_name_the_entry(vm)
  local err = raises(vm.batch, vm, function(b) b:stat("/") b:write_file(5) end)
  contains(err, "write_file")
  contains(err, "path must be")
end

function T.push_file_checks_its_arguments(vm, dir)
  contains(raises(vm.push_file, vm, "", dir .. "/x"), "vm:push_file: host_path must be a non-empty string")
  contains(raises(vm.push_file, vm, dir .. "/missing", dir .. "/x"), "vm:push_file: cannot read")
  contains(raises(vm.push_file, vm, dir, dir .. "/x"), "is a directory")
end

return T
