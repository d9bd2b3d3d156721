-- run_async and Process objects on the real default guest.
local guest = require("spec.support.guest")

describe("vm:run_async", function()
  local vm

  lazy_setup(function() vm = guest.boot("procs") end)
  lazy_teardown(function() if vm then vm:close() end end)

  it("waits for a process and returns a RunResult", function()
    local p = vm:run_async("echo out; echo err >&2; exit 4")
    assert.is_true(p:pid() > 0)
    local r = p:wait("10s")
    assert.are.equal(4, r.exit_code)
    assert.are.equal("out\n", r.stdout)
    assert.are.equal("err\n", r.stderr)
    assert.is_false(r:ok())
    local err = guest.error_of(p.wait, p)
    assert.truthy(err:find("one-shot", 1, true), err)
    p:close()
  end)

  it("feeds stdin and closes it", function()
    local p = vm:run_async("cat", {})
    assert.are.equal(6, p:stdin_write("hello "))
    assert.are.equal(5, p:stdin_write("world"))
    p:close_stdin()
    local r = p:wait("10s")
    assert.are.equal("hello world", r.stdout)
  end)

  it("reports status, takes signals by name and number", function()
    local p = vm:run_async("sleep 30")
    assert.are.equal("running", p:status())
    p:kill("term")
    local r = p:wait("10s")
    assert.are.equal("signalled", r.status)
    assert.are.equal(15, r.signal)
    assert.are.equal("exited", p:status())

    p = vm:run_async("sleep 30")
    p:signal(9)
    assert.are.equal(9, p:wait("10s").signal)
  end)

  it("kill ends the whole command (its process group); signal the process alone", function()
    local p = vm:run_async("sleep 30; echo never")
    p:kill()
    local r = p:wait("20s")
    assert.are.equal(15, r.signal)
    assert.are.equal("", r.stdout)
    local ps = vm:run("ps -o comm | grep -c '^sleep$' || true")
    assert.are.equal("0", (ps.stdout:gsub("%s", "")))

    -- The children of `pid` named `comm`, from ps.
    local function children(pid, comm)
      local n = 0
      for ppid, c in vm:run("ps -o ppid,comm"):assert_ok().stdout:gmatch("(%d+)%s+(%S+)") do
        if tonumber(ppid) == pid and c == comm then n = n + 1 end
      end
      return n
    end
    p = vm:run_async("sleep 30; echo never")
    vm:run("sleep 0.2")
    assert.are.equal(1, children(p:pid(), "sleep"))
    p:signal("kill")
    -- The shell died alone: its sleep, now an orphan, still holds the
    -- pipes, until the wait's deadline kills the group.
    assert.are.equal(9, p:wait("300ms").signal)
    local ps = vm:run("ps -o comm | grep -c '^sleep$' || true")
    assert.are.equal("0", (ps.stdout:gsub("%s", "")))
  end)

  it("a wait timeout kills the whole group", function()
    local p = vm:run_async("sleep 30 & sleep 30")
    local r = p:wait("300ms")
    assert.are.equal("timed_out", r.status)
    assert.is_true(r.timed_out)
    local ps = vm:run("ps -o comm | grep -c '^sleep$' || true")
    assert.are.equal("0", (ps.stdout:gsub("%s", "")))
  end)

  it("streams stdout live and replays it from the start", function()
    local p = vm:run_async("echo first; sleep 0.3; echo second")
    local out = p:stdout_stream()
    out:expect("first", "5s")
    out:expect("second", "5s")
    p:wait("10s")
    local replay = p:stderr_stream()
    assert.is_nil(replay:next("2s")) -- nothing on stderr; ends at exit
    assert.is_true(replay:eof())
  end)

  it("rejects a timeout option (pass it to wait)", function()
    local err = guest.error_of(vm.run_async, vm, "sleep 1", { timeout = 1 })
    assert.truthy(err:find("pass it to proc:wait", 1, true), err)
  end)

  it("closing a running process ends it", function()
    local p = vm:run_async("sleep 60")
    local pid = p:pid()
    p:close()
    local r = vm:run("kill -0 " .. pid .. " 2>/dev/null && echo alive || echo gone")
    assert.are.equal("gone\n", r.stdout)
    p:close() -- idempotent
  end)

  it("checks arguments", function()
    local p = vm:run_async("sleep 5")
    local err = guest.error_of(p.kill, p, "nosuch")
    assert.truthy(err:find("unknown signal name `nosuch`", 1, true), err)
    err = guest.error_of(p.signal, p)
    assert.truthy(err:find("proc:signal: expected a signal", 1, true), err)
    err = guest.error_of(p.wait, p, 0)
    assert.truthy(err:find("timeout=0 would SIGKILL", 1, true), err)
    err = guest.error_of(p.wait, p, "soon")
    assert.truthy(err:find("proc:wait: timeout: cannot parse duration", 1, true), err)
    err = guest.error_of(p.stdin_write, p, 42)
    assert.truthy(err:find("proc:stdin_write: data must be a string", 1, true), err)
    p:close()
  end)
end)
