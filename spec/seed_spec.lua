-- Every example of the user's page "Files and handles", run as written
-- (t:assert* replaced by assert), on a real default guest.
local provium = require("provium")

describe("files and handles (the user's page)", function()
  local vm

  lazy_setup(function()
    vm = provium:vm("seed", "default")
    vm:boot()
  end)
  lazy_teardown(function() if vm then vm:close() end end)
  after_each(function() _provium_close_test_scope() end)

  it("/tmp has the expected files (fresh guest)", function()
    vm:write_file("/tmp/a", "")
    vm:write_file("/tmp/b", "")
    local names = {}
    for _, e in ipairs(vm:listdir("/tmp")) do
      if e.entry_type == "file" then table.insert(names, e.name) end
    end
    table.sort(names)
    assert(names[1] == "a" and names[2] == "b")
  end)

  it("high-level read_file / write_file / stat", function()
    vm:write_file("/etc/test.conf", "key=value\n")
    local body = vm:read_file("/etc/test.conf")
    local meta = vm:stat("/etc/test.conf")
    assert.are.equal("key=value\n", body)
    assert.are.equal(10, meta.size)

    local content = vm:read_file("/etc/hostname")
    assert.are.equal("provium\n", content)

    vm:write_file("/tmp/data", "binary\0bytes")
    assert.are.equal("binary\0bytes", vm:read_file("/tmp/data"))
  end)

  it("stat fields", function()
    local m = vm:stat("/etc/test.conf")
    assert.are.equal(10, m.size)
    assert.is_number(m.mtime)
    assert.are.equal("integer", math.type(m.mtime_ns))
    assert(m.perm <= 4095)
    assert.are.equal("file", m.entry_type)
  end)

  it("listdir", function()
    local seen = 0
    for _, e in ipairs(vm:listdir("/etc")) do
      assert.is_string(e.name)
      assert.is_string(e.entry_type)
      seen = seen + 1
    end
    assert(seen > 3)
  end)

  it("mkdir", function()
    vm:mkdir("/tmp/d")
    vm:mkdir("/tmp/d/e/f", {parents = true})
    vm:mkdir("/tmp/private", {perm = 0x1c0})  -- 0o700
    assert.are.equal(0x1c0, vm:stat("/tmp/private").perm)
  end)

  it("unlink and rename", function()
    vm:write_file("/tmp/u", "x")
    vm:unlink("/tmp/u")
    vm:mkdir("/tmp/ud")
    vm:unlink("/tmp/ud")
    vm:mkdir("/tmp/full")
    vm:write_file("/tmp/full/x", "")
    assert.has_error(function() vm:unlink("/tmp/full") end)
    vm:write_file("/tmp/r1", "r")
    vm:rename("/tmp/r1", "/tmp/r2")
    assert.are.equal("r", vm:read_file("/tmp/r2"))
  end)

  it("low-level: open_file, write, seek, read", function()
    local h = vm:open_file("/tmp/data", {read=true, write=true, create=true, truncate=true})
    h:write("hello")
    h:seek(0)
    local s = h:read(5)
    h:close()
    assert.are.equal("hello", s)
  end)

  it("mode table: empty mode errors at open time; write-only create 0600", function()
    assert.has_error(function() vm:open_file("/tmp/data", {}) end)
    local h = vm:open_file("/etc/secret", {write=true, create=true, truncate=true, perm=0x180})
    h:close()
    assert.are.equal(0x180, vm:stat("/etc/secret").perm)
  end)

  it("reading: read(64), read_all, EOF is the empty string", function()
    local h = vm:open_file("/etc/hostname", {read=true})
    local first = h:read(64)         -- up to 64 bytes
    local rest  = h:read_all()       -- drain to EOF
    h:close()
    assert.are.equal("provium\n", first)
    assert.are.equal("", rest)

    vm:write_file("/tmp/loop", string.rep("z", 10000))
    h = vm:open_file("/tmp/loop", {read=true})
    local total = 0
    while true do
      local chunk = h:read(4096)
      if chunk == "" then break end
      total = total + #chunk
    end
    h:close()
    assert.are.equal(10000, total)
  end)

  it("writing returns the bytes written", function()
    local h = vm:open_file("/tmp/data", {write=true, create=true, truncate=true})
    local n = h:write("hello world")
    h:close()
    assert.are.equal(11, n)
  end)

  it("seek and tell", function()
    vm:write_file("/tmp/x", "0123456789abcdefghij")
    local h = vm:open_file("/tmp/x", {read=true})
    assert.are.equal(10, h:seek(10, "set"))   -- absolute offset 10
    assert.are.equal(15, h:seek(5, "cur"))    -- relative +5 from current
    assert.are.equal(19, h:seek(-1, "end"))   -- 1 byte before EOF
    assert.are.equal(19, h:tell())            -- current offset
    assert.are.equal("j", h:read(1))
    h:close()
  end)

  it("closing is idempotent; later calls raise 'file is closed'", function()
    local h = vm:open_file("/tmp/x", {read=true})
    h:close()
    h:close()  -- second close is fine; idempotent
    local ok, err = pcall(function() h:read(1) end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("file is closed", 1, true))
  end)

  it("raw fd and ioctl", function()
    local h = vm:open_file("/tmp/x", {read=true})
    local fd = h:fd()              -- u64 handle id
    assert(fd > 0)
    local FIONREAD = 0x541B
    local r = vm:ioctl(fd, FIONREAD, "\0\0\0\0")
    assert.are.equal(0, r.ret)
    assert.are.equal(20, string.unpack("<i4", r.out_data)) -- bytes left to read
    h:close()
    assert.are.equal(0, h:fd())
  end)

  it("tail_file sees logger output", function()
    local stream = vm:tail_file("/var/log/messages")
    vm:run("logger 'hello'"):assert_ok()
    local line = stream:read_until("\n", "5s")
    assert(line:find("hello"))
  end)

  it("tail start positions", function()
    vm:write_file("/tmp/t", "abcdef")
    local s = vm:tail_file("/tmp/t", {start = "beginning"})
    assert.are.equal("abcdef", s:next("2s"))
    s:close()
    s = vm:tail_file("/tmp/t", {start = -2})
    assert.are.equal("ef", s:next("1s"))
    s:close()
    s = vm:tail_file("/tmp/t", {start = 3})
    assert.are.equal("def", s:next("1s"))
    s:close()
    s = vm:tail_file("/tmp/t") -- "end": only new bytes
    vm:run("printf 'gh' >> /tmp/t"):assert_ok()
    assert.are.equal("gh", s:next("2s"))
    s:close()
    assert.is_true(s:eof())
  end)

  it("file:tail_stream from the cursor", function()
    local h = vm:open_file("/var/log/messages", {read=true})
    h:seek(0, "end")
    local stream = h:tail_stream()
    -- stream now subscribes from current EOF onwards
    vm:run("logger 'from the cursor'"):assert_ok()
    stream:expect("from the cursor", "5s")
    stream:close()
    h:close()
  end)

  it("vm:fd_stream on a File", function()
    local h = vm:open_file("/dev/console", {read=true})
    local stream = vm:fd_stream(h)
    assert.is_nil(stream:next("200ms")) -- nobody types on the console
    stream:close()
    h:close()
  end)

  it("common pattern: config round-trips", function()
    local body = "key1=value1\nkey2=value2\n"
    vm:write_file("/etc/test.conf", body)
    assert.are.equal(vm:read_file("/etc/test.conf"), body)
    assert.are.equal(vm:stat("/etc/test.conf").size, #body)
  end)

  it("common pattern: private file is 0600", function()
    local h = vm:open_file("/etc/secret", {write=true, create=true, perm=0x180})  -- 0o600
    h:close()
    assert.are.equal(vm:stat("/etc/secret").perm, 0x180)
  end)

  it("common pattern: logger writes are persisted", function()
    local stream = vm:tail_file("/var/log/messages")
    vm:run("logger 'event 1'"):assert_ok()
    vm:run("logger 'event 2'"):assert_ok()
    stream:expect("event 1", "5s")
    stream:expect("event 2", "5s")
  end)

  it("files inside a worker", function()
    local w = vm:spawn_worker()
    local h = w:open_file("/tmp/from-worker", {write=true, create=true})
    h:write("hi")
    h:close()
    assert.are.equal("hi", vm:read_file("/tmp/from-worker"))
  end)

  it("batch I/O for low latency", function()
    local results = vm:batch(function(b)
      b:write_file("/tmp/a", "1")
      b:write_file("/tmp/b", "2")
      b:write_file("/tmp/c", "3")
      b:read_file("/tmp/a")
      b:stat("/tmp/b")
    end)
    assert.are.equal(5, #results)
    assert.are.equal("1", results[4].ok)
    assert.are.equal(1, results[5].ok.size)
    for i = 1, 3 do assert.is_nil(results[i].err) end
  end)

  it("push_file resolves against this file's directory", function()
    vm:push_file("support/guest.lua", "/usr/bin/peios-uapi")
    vm:push_file("support/guest.lua", "/data.tar", {auto_dep = false})
    assert.are.equal(vm:read_file("/usr/bin/peios-uapi"), vm:read_file("/data.tar"))
  end)
end)
