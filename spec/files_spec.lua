-- File operations by path on the real default guest.
local provium = require("provium")
local guest = require("spec.support.guest")

describe("files by path", function()
  local vm

  lazy_setup(function() vm = guest.boot("files") end)
  lazy_teardown(function() if vm then vm:close() end end)

  it("writes and reads back text", function()
    local body = "key1=value1\nkey2=value2\n"
    vm:write_file("/etc/test.conf", body)
    assert.are.equal(body, vm:read_file("/etc/test.conf"))
    assert.are.equal(#body, vm:stat("/etc/test.conf").size)
  end)

  it("replaces contents (truncates) on write", function()
    vm:write_file("/tmp/shrink", "a long first version")
    vm:write_file("/tmp/shrink", "short")
    assert.are.equal("short", vm:read_file("/tmp/shrink"))
  end)

  it("round-trips every byte value, NULs included", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local data = table.concat(bytes) .. "binary\0bytes\0"
    vm:write_file("/tmp/data", data)
    assert.are.equal(data, vm:read_file("/tmp/data"))
  end)

  it("round-trips an empty file", function()
    vm:write_file("/tmp/empty", "")
    assert.are.equal("", vm:read_file("/tmp/empty"))
    assert.are.equal(0, vm:stat("/tmp/empty").size)
  end)

  it("round-trips a 4 MiB file with content intact", function()
    local parts = {}
    for i = 1, 4 * 1024 do
      parts[i] = string.format("%08d", i):rep(128) -- 1 KiB each, distinct per KiB
    end
    local data = table.concat(parts)
    assert.are.equal(4 * 1024 * 1024, #data)
    vm:write_file("/tmp/big", data)
    assert.are.equal(#data, vm:stat("/tmp/big").size)
    local back = vm:read_file("/tmp/big")
    assert.are.equal(#data, #back)
    assert.is_true(back == data)
    -- the guest sees the same bytes
    local r = vm:run("md5sum /tmp/big")
    r:assert_ok()
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb")) f:write(data) f:close()
    local host = io.popen("md5sum " .. tmp):read("a"):match("^(%x+)")
    os.remove(tmp)
    assert.are.equal(host, r.stdout:match("^(%x+)"))
  end)

  it("stops a read at its size cap and stays usable", function()
    -- /dev/zero never ends: the cap ends the read at once.
    local t0 = provium.now()
    local err = guest.error_of(vm.read_file, vm, "/dev/zero", { max_size = "4M" })
    assert.truthy(err:find('vm:read_file("/dev/zero"): the file is larger than the cap of 4 MiB', 1, true), err)
    assert.is_true(provium.now() - t0 < 10)
    vm:run("head -c 300000 /dev/urandom > /tmp/capped")
    err = guest.error_of(vm.read_file, vm, "/tmp/capped", { max_size = 100000 })
    assert.truthy(err:find("larger than the cap of 100000 bytes", 1, true), err)
    assert.are.equal(300000, #vm:read_file("/tmp/capped", { max_size = 300000 }))
    assert.are.equal(300000, #vm:read_file("/tmp/capped", { max_size = false }))
    err = guest.error_of(vm.read_file, vm, "/tmp/capped", { max_sise = 1 })
    assert.truthy(err:find('unknown option "max_sise" (did you mean "max_size"?)', 1, true), err)
    assert.are.equal("provium\n", vm:read_file("/etc/hostname"))
  end)

  it("reads files whose size the kernel does not report", function()
    local cpuinfo = vm:read_file("/proc/cpuinfo")
    assert.truthy(cpuinfo:find("processor", 1, true))
  end)

  it("stats files, directories and symlinks", function()
    vm:write_file("/tmp/st", "0123456789")
    local m = vm:stat("/tmp/st")
    assert.are.equal(10, m.size)
    assert.are.equal("file", m.entry_type)
    assert.is_true(m.perm <= 4095)
    assert.are.equal(0x1a4, m.perm) -- 0644 with the agent's umask 022
    assert.is_true(math.type(m.mtime_ns) == "integer")
    assert.is_true(m.mtime > 1e9 and m.mtime < 1e15)
    assert.is_true(math.abs(m.mtime - m.mtime_ns / 1e9) < 1e-3)
    assert.are.equal(0, m.uid)
    assert.are.equal(0, m.gid)
    assert.is_true(m.ino > 0)
    assert.are.equal(1, m.nlink)
    assert.are.equal("directory", vm:stat("/tmp").entry_type)
    assert.are.equal("char_device", vm:stat("/dev/null").entry_type)
    vm:run("ln -sf /tmp/st /tmp/st-link"):assert_ok()
    assert.are.equal("file", vm:stat("/tmp/st-link").entry_type)
    assert.are.equal("symlink", vm:stat("/tmp/st-link", { follow = false }).entry_type)
  end)

  it("lists directories", function()
    vm:mkdir("/tmp/ls")
    vm:write_file("/tmp/ls/a", "")
    vm:write_file("/tmp/ls/b", "")
    vm:mkdir("/tmp/ls/sub")
    local seen = {}
    for _, e in ipairs(vm:listdir("/tmp/ls")) do seen[e.name] = e.entry_type end
    assert.are.same({ a = "file", b = "file", sub = "directory" }, seen)
  end)

  it("lists a directory whose listing is larger than a frame", function()
    -- 25,000 names of 200 bytes: about 5.3 MB of listing (a frame holds 4 MiB).
    vm:run("mkdir -p /tmp/huge && cd /tmp/huge && " ..
      "awk 'BEGIN { for (i = 0; i < 25000; i++) printf \"%0200d\\n\", i }' | xargs touch"):assert_ok()
    local entries = vm:listdir("/tmp/huge")
    assert.are.equal(25000, #entries)
    local seen = {}
    for _, e in ipairs(entries) do
      assert.are.equal(200, #e.name)
      assert.are.equal("file", e.entry_type)
      seen[e.name] = true
    end
    local function name(i) return string.rep("0", 200 - #tostring(i)) .. i end
    assert.is_true(seen[name(0)])
    assert.is_true(seen[name(24999)])
    vm:run("rm -rf /tmp/huge"):assert_ok()
  end)

  it("makes directories, with parents and perm", function()
    vm:mkdir("/tmp/d")
    assert.are.equal("directory", vm:stat("/tmp/d").entry_type)
    vm:mkdir("/tmp/d/e/f", { parents = true })
    assert.are.equal("directory", vm:stat("/tmp/d/e/f").entry_type)
    vm:mkdir("/tmp/d/e/f", { parents = true }) -- existing is fine with parents
    vm:mkdir("/tmp/private", { perm = 0x1c0 })
    assert.are.equal(0x1c0, vm:stat("/tmp/private").perm)
    local err = guest.error_of(vm.mkdir, vm, "/tmp/d")
    assert.are.equal("EEXIST", err.code)
  end)

  it("unlinks files and empty directories, not full ones", function()
    vm:write_file("/tmp/gone", "x")
    vm:unlink("/tmp/gone")
    assert.are.equal("ENOENT", guest.error_of(vm.stat, vm, "/tmp/gone").code)
    vm:mkdir("/tmp/emptydir")
    vm:unlink("/tmp/emptydir")
    assert.are.equal("ENOENT", guest.error_of(vm.stat, vm, "/tmp/emptydir").code)
    vm:mkdir("/tmp/fulldir")
    vm:write_file("/tmp/fulldir/x", "")
    local err = guest.error_of(vm.unlink, vm, "/tmp/fulldir")
    assert.are.equal("ENOTEMPTY", err.code)
  end)

  it("renames", function()
    vm:write_file("/tmp/from", "moved")
    vm:rename("/tmp/from", "/tmp/to")
    assert.are.equal("moved", vm:read_file("/tmp/to"))
    assert.are.equal("ENOENT", guest.error_of(vm.stat, vm, "/tmp/from").code)
  end)

  it("raises error objects for guest OS failures", function()
    local err = guest.error_of(vm.read_file, vm, "/nope")
    assert.are.equal("table", type(err))
    assert.are.equal("ENOENT", err.code)
    assert.are.equal(2, err.errno)
    assert.are.equal("vm:read_file", err.op)
    assert.are.equal("/nope", err.path)
    assert.are.equal("No such file or directory", err.message)
    assert.are.equal('vm:read_file("/nope"): ENOENT: No such file or directory', tostring(err))
    assert.truthy(err:find("ENOENT", 1, true))

    assert.are.equal("ENOENT", guest.error_of(vm.stat, vm, "/nope").code)
    assert.are.equal("ENOENT", guest.error_of(vm.listdir, vm, "/nope").code)
    assert.are.equal("ENOTDIR", guest.error_of(vm.listdir, vm, "/etc/hostname").code)
    assert.are.equal("EISDIR", guest.error_of(vm.read_file, vm, "/tmp").code)
    assert.are.equal("ENOENT", guest.error_of(vm.write_file, vm, "/no/such/dir/f", "x").code)
    assert.are.equal("ENOENT", guest.error_of(vm.mkdir, vm, "/no/such/dir").code)
    assert.are.equal("ENOENT", guest.error_of(vm.unlink, vm, "/nope").code)
    local re = guest.error_of(vm.rename, vm, "/tmp/nope", "/tmp/x")
    assert.are.equal("ENOENT", re.code)
    assert.are.equal([[vm:rename("/tmp/nope", "/tmp/x"): ENOENT: No such file or directory]], tostring(re))
  end)

  it("reports permission errors as EACCES", function()
    vm:write_file("/tmp/secret", "s")
    vm:run("chmod 600 /tmp/secret"):assert_ok()
    local r = vm:run("su -s /bin/sh user -c 'cat /tmp/secret'")
    assert.is_false(r:ok())
    assert.truthy(r.stderr:find("Permission denied", 1, true))
  end)

  it("pushes host files relative to the calling file", function()
    vm:push_file("support/guest.lua", "/tmp/pushed.lua")
    local f = assert(io.open("spec/support/guest.lua", "rb"))
    local want = f:read("a")
    f:close()
    assert.are.equal(want, vm:read_file("/tmp/pushed.lua"))
    vm:push_file("support/guest.lua", "/tmp/pushed2.lua", { auto_dep = false })
    assert.are.equal(want, vm:read_file("/tmp/pushed2.lua"))
  end)
end)
