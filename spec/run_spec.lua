-- Running processes in the real default guest.
local guest = require("spec.support.guest")

describe("vm:run", function()
  local vm

  lazy_setup(function() vm = guest.boot("run") end)
  lazy_teardown(function() if vm then vm:close() end end)

  it("runs a shell command and captures stdout, stderr and the exit code", function()
    local r = vm:run("echo out; echo err >&2; exit 3")
    assert.are.equal("out\n", r.stdout)
    assert.are.equal("err\n", r.stderr)
    assert.are.equal(3, r.exit_code)
    assert.are.equal("exited", r.status)
    assert.is_false(r.timed_out)
    assert.is_nil(r.signal)
    assert.is_false(r:ok())
  end)

  it("caps the output: an endless writer is killed and the call raises naming the cap", function()
    local err = tostring(guest.error_of(vm.run, vm, "yes", { max_output = "1M" }))
    assert.truthy(err:find("EFBIG: run: the output exceeded the cap of 1048576 bytes (opts.max_output)", 1, true), err)
    assert.are.equal("", vm:run("pgrep -x yes || true").stdout)
    assert.are.equal(300000, #vm:run("head -c 300000 /dev/zero", { max_output = 300000 }).stdout)
    assert.are.equal(300000, #vm:run("head -c 300000 /dev/zero", { max_output = false }).stdout)
    err = tostring(guest.error_of(vm.run, vm, "head -c 300000 /dev/zero", { max_output = 1000 }))
    assert.truthy(err:find("cap of 1000 bytes", 1, true), err)
    err = tostring(guest.error_of(vm.run_async, vm, "yes", { max_output = 1 }))
    assert.truthy(err:find("opts.max_output applies to run only", 1, true), err)
  end)

  it("streams stdin of any size (beyond one frame)", function()
    local big = string.rep("0123456789", 1024 * 1024) -- 10 MiB: more than a 4 MiB frame
    assert.are.equal("10485760\n", vm:run("wc -c", { stdin = big }).stdout)
    -- Processes that stop reading early do not stall the upload.
    assert.are.equal("01234", vm:run("head -c 5", { stdin = big }).stdout)
    assert.are.equal(0, vm:run("true", { stdin = big }).exit_code)
  end)

  it("supports pipes and redirections in the shell form", function()
    local r = vm:run("printf 'b\\na\\n' | sort | tr a-z A-Z")
    r:assert_ok()
    assert.are.equal("A\nB\n", r.stdout)
  end)

  it("execs directly with an argument list (no shell)", function()
    local r = vm:run("echo", { "a  b", "$HOME", "*" })
    r:assert_ok()
    assert.are.equal("a  b $HOME *\n", r.stdout)
    r = vm:run("true", {})
    assert.is_true(r:ok())
  end)

  it("takes an options table: args, env, env_clear, cwd, stdin", function()
    local r = vm:run("env", { args = {}, env = { FOO = "bar" } })
    assert.truthy(r.stdout:find("FOO=bar", 1, true))
    assert.truthy(r.stdout:find("PATH=", 1, true))
    r = vm:run("/usr/bin/env", { args = {}, env = { ONLY = "me" }, env_clear = true })
    assert.are.equal("ONLY=me\n", r.stdout)
    r = vm:run("pwd", { cwd = "/tmp" })
    assert.are.equal("/tmp\n", r.stdout)
    r = vm:run("cat", { args = {}, stdin = "fed\0through stdin" })
    assert.are.equal("fed\0through stdin", r.stdout)
    r = vm:run("wc -c", { stdin = "12345" }) -- opts without args: shell form
    assert.are.equal("5", (r.stdout:gsub("%s", "")))
  end)

  it("gives the child an immediate EOF on stdin by default", function()
    local r = vm:run("cat")
    r:assert_ok()
    assert.are.equal("", r.stdout)
  end)

  it("reports signals", function()
    local r = vm:run("kill -KILL $$")
    assert.are.equal("signalled", r.status)
    assert.are.equal(9, r.signal)
    assert.are.equal(-1, r.exit_code)
  end)

  it("kills the whole process group on timeout", function()
    local t0 = os.time()
    local r = vm:run("sleep 30 & sleep 30", { timeout = "300ms" })
    assert.is_true(os.time() - t0 < 10)
    assert.are.equal("timed_out", r.status)
    assert.is_true(r.timed_out)
    assert.is_false(r:ok())
    -- no sleep survived
    local ps = vm:run("ps -o comm | grep -c '^sleep$' || true")
    assert.are.equal("0", (ps.stdout:gsub("%s", "")))
  end)

  it("returns large output completely", function()
    local r = vm:run("head -c 3000000 /dev/zero | tr '\\0' x; head -c 700000 /dev/zero | tr '\\0' y >&2")
    r:assert_ok()
    assert.are.equal(3000000, #r.stdout)
    assert.are.equal(700000, #r.stderr)
    assert.is_nil(r.stdout:find("[^x]"))
    assert.is_nil(r.stderr:find("[^y]"))
  end)

  it("raises ENOENT for a missing program in direct form; the shell says 127", function()
    local err = guest.error_of(vm.run, vm, "/no/such/program", {})
    assert.are.equal("ENOENT", err.code)
    assert.are.equal("vm:run", err.op)
    local r = vm:run("/no/such/program")
    assert.are.equal(127, r.exit_code)
  end)

  it("assert_ok raises with the status and the output", function()
    local r = vm:run("echo hi; echo oops >&2; exit 2")
    local ok, err = pcall(r.assert_ok, r)
    assert.is_false(ok)
    -- Names the command and shows its output verbatim, at the caller's line.
    assert.are.equal(
      "spec/run_spec.lua:113: command echo hi; echo oops >&2; exit 2 exited with code 2\n"
        .. "  stdout:\n    hi\n  stderr:\n    oops", err)
    ok, err = pcall(r.assert_ok, r, "setup step")
    assert.truthy(err:find(": setup step: command echo hi", 1, true), err)
    local good = vm:run("true")
    assert.are.equal(good, good:assert_ok())
    assert.truthy(tostring(r):find("RunResult{", 1, true))
  end)

  it("serves several callers in turn on one connection", function()
    for i = 1, 200 do
      assert.are.equal(tostring(i) .. "\n", vm:run("echo", { tostring(i) }).stdout)
    end
  end)
end)
