-- Raw calls: syscall buffers in and out, ioctl on a File, fd_stream; their
-- argument errors.
local T = {}

function T.syscall_with_buffers(vm, dir)
  local path = dir .. "/raw"
  vm:write_file(path, "hello")
  -- openat(AT_FDCWD, path, O_RDONLY): a string is a NUL-terminated copy.
  local o = vm:syscall(257, -100, path, 0)
  local fd = o.ret
  eq(o.out_bufs[1], path .. "\0")
  assert(fd >= 0, "openat failed")
  -- read(fd, buf, 5) into a buffer the call fills.
  local r = vm:syscall(0, { args = { fd, 0, 5 }, bufs = { string.rep("\0", 5) }, ptrs = { 1 } })
  eq(r.ret, 5)
  eq(r.out_bufs[1], "hello")
  eq(vm:syscall(3, fd).ret, 0)
end

function T.syscall_arguments(vm)
  contains(raises(vm.syscall, vm), "vm:syscall(nr, ...): missing nr")
  contains(raises(vm.syscall, vm, "open"), 'vm:syscall: nr must be an integer (got "open")')
  contains(raises(vm.syscall, vm, 0, {}, {}), "vm:syscall: argument #1 must be an integer (got a table)")
  contains(raises(vm.syscall, vm, 0, { args = { 1, 2, 3, 4, 5, 6, 7 } }), "vm:syscall: args has 7 entries (at most 6)")
  contains(raises(vm.syscall, vm, 0, { bufs = { "x" }, ptrs = { 6 } }), "vm:syscall: ptrs[1] must be an argument slot 0..5")
  contains(raises(vm.syscall, vm, 0, { bogus = 1 }), 'unknown option "bogus"')
  contains(raises(vm.syscall, vm, 1, 1, 2, 3, 4, 5, 6, 7), "vm:syscall: at most 6 arguments after nr (got 7)")
end

function T.ioctl_on_a_file(vm, dir)
  vm:write_file(dir .. "/i", "abc")
  local f <close> = vm:open_file(dir .. "/i", { read = true })
  -- FIONREAD: the bytes that a read would return.
  local r = vm:ioctl(f, 0x541B, string.rep("\0", 4))
  eq(r.ret, 0)
  eq(string.unpack("<i4", r.out_data), 3)
  contains(raises(vm.ioctl, vm, "not a file", 0x541B), "vm:ioctl: file must be")
  -- A negative return raises, as a guest error.
  local ok, err = pcall(vm.ioctl, vm, f, 0x5401, string.rep("\0", 64)) -- TCGETS on a file
  eq(ok, false)
  eq(err.code, "ENOTTY")
end

function T.fd_stream_follows_a_file(vm, dir)
  local path = dir .. "/s"
  vm:write_file(path, "one\ntwo\n")
  local f <close> = vm:open_file(path, { read = true })
  eq(f:read(4), "one\n")
  local t <close> = vm:fd_stream(f)
  eq(t:read_until("\n"), "two\n")
  vm:run("echo three >> " .. path)
  eq(t:expect("three"), "three")
end

return T
