-- Raw system calls and ioctls on the real default guest.
local guest = require("spec.support.guest")

describe("vm:syscall and vm:ioctl", function()
  local vm

  lazy_setup(function() vm = guest.boot("raw") end)
  lazy_teardown(function() if vm then vm:close() end end)

  it("returns {ret, errno, out_bufs} without raising", function()
    local r = vm:syscall(39) -- getpid
    assert.is_true(r.ret > 1)
    assert.are.equal(0, r.errno)
    assert.are.same({}, r.out_bufs)
    r = vm:syscall(9999)
    assert.are.equal(-1, r.ret)
    assert.are.equal(38, r.errno) -- ENOSYS
  end)

  it("survive calls that would end the op server or overrun a buffer", function()
    for _, nr in ipairs({ 60, 231, 59 }) do -- exit, exit_group, execve
      local err = tostring(guest.error_of(vm.syscall, vm, nr, 0))
      assert.truthy(err:find("would end or replace the agent's op server", 1, true), err)
    end
    -- read(fd, 3-byte buffer, 100000) from /dev/zero: the kernel stops at
    -- the guard page after the buffer (EFAULT) instead of overwriting the
    -- agent's memory.
    local fd = vm:syscall(2, { args = { 0, 0 }, bufs = { "/dev/zero\0" }, ptrs = { 0 } }).ret
    assert.is_true(fd > 2)
    local r = vm:syscall(0, { args = { fd, 0, 100000 }, bufs = { "abc" }, ptrs = { 1 } })
    assert.is_true((r.ret == -1 and r.errno == 14) or r.ret == 3, ("ret %d errno %d"):format(r.ret, r.errno))
    assert.are.equal(3, #r.out_bufs[1])
    vm:syscall(3, fd)
    assert.are.equal("provium\n", vm:read_file("/etc/hostname"))
  end)

  it("passes buffers in the table form", function()
    -- uname(2) fills a struct utsname (6 x 65 bytes)
    local r = vm:syscall(63, { bufs = { string.rep("\0", 390) }, ptrs = { 0 } })
    assert.are.equal(0, r.ret)
    assert.are.equal("Linux", r.out_bufs[1]:match("^(%Z+)"))
    assert.are.equal("provium", r.out_bufs[1]:sub(66):match("^(%Z+)"))
  end)

  it("splices nested pointers", function()
    -- writev(fd, iov, 1) with iov = {base = bufs[2], len = 5} to a pipe
    local fds = vm:syscall(22, { bufs = { string.rep("\0", 8) }, ptrs = { 0 } }) -- pipe
    assert.are.equal(0, fds.ret)
    local rfd, wfd = string.unpack("<i4i4", fds.out_bufs[1])
    local iov = string.pack("<I8I8", 0, 5)
    local r = vm:syscall(20, { args = { wfd, 0, 1 }, bufs = { iov, "hello" }, ptrs = { 1 },
      nested = { { parent = 1, child = 2, offset = 0 } } })
    assert.are.equal(5, r.ret)
    local rd = vm:syscall(0, { args = { rfd, 0, 5 }, bufs = { string.rep("\0", 5) }, ptrs = { 1 } })
    assert.are.equal("hello", rd.out_bufs[1])
    vm:syscall(3, rfd)
    vm:syscall(3, wfd)
  end)

  it("ioctl on a File handle; a negative return raises", function()
    vm:write_file("/tmp/io", "12345")
    local f = vm:open_file("/tmp/io", { read = true })
    local r = vm:ioctl(f, 0x541B, "\0\0\0\0") -- FIONREAD
    assert.are.equal(5, string.unpack("<i4", r.out_data))
    local err = guest.error_of(vm.ioctl, vm, f:fd(), 0x5401, string.rep("\0", 64)) -- TCGETS on a file
    assert.are.equal("ENOTTY", err.code)
    f:close()
    err = guest.error_of(vm.ioctl, vm, f, 0x541B)
    assert.truthy(tostring(err):find("file is closed", 1, true))
  end)

  it("checks arguments", function()
    local err = guest.error_of(vm.syscall, vm)
    assert.truthy(err:find("missing nr", 1, true), err)
    err = guest.error_of(vm.syscall, vm, "getpid")
    assert.truthy(err:find("nr must be an integer", 1, true), err)
    err = guest.error_of(vm.syscall, vm, 1, { ptrs = { 7 }, bufs = { "" } })
    assert.truthy(err:find("ptrs[1] must be an argument slot 0..5", 1, true), err)
    err = guest.error_of(vm.syscall, vm, 1, { nested = { { parent = 1, child = 2 } } })
    assert.truthy(err:find("nested[1]", 1, true), err)
    err = guest.error_of(vm.syscall, vm, 1, { argz = {} })
    assert.truthy(err:find('unknown option "argz"', 1, true), err)
    err = guest.error_of(vm.ioctl, vm)
    assert.truthy(err:find("file must be a File or a handle id from file:fd() (got nil)", 1, true), err)
    err = guest.error_of(vm.ioctl, vm, 1)
    assert.truthy(err:find("missing cmd", 1, true), err)
  end)
end)
