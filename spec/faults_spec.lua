-- Faults injected for real: the documented outcome, in bounded time, with
-- nothing left behind.
local provium = require("provium")
local guest = require("spec.support.guest")

local function sh(cmd) return (guest.sh(cmd)) end
local write = guest.write

--- The error of the first guest call that fails within `secs` seconds.
local function next_failure(vm, secs)
  local deadline = provium.now() + secs
  while provium.now() < deadline do
    local ok, err = pcall(vm.stat, vm, "/")
    if not ok then return tostring(err) end
  end
  error("no call failed within " .. secs .. " s")
end

describe("failures are attributed", function()
  it("a guest kernel panic names the panic", function()
    local vm <close> = guest.boot("fault-panic")
    pcall(vm.run, vm, "echo c > /proc/sysrq-trigger")
    local err = next_failure(vm, 20)
    assert.truthy(err:find("the guest kernel panicked: sysrq triggered crash", 1, true), err)
    assert.are.equal("dead", vm:state())
  end)

  it("QEMU killed by a signal says which", function()
    local vm <close> = guest.boot("fault-qemu-kill")
    -- [f]: the pattern must not match the shell running pkill.
    assert(os.execute("pkill -KILL -f 'provium:[f]ault-qemu-kill'"))
    local err = next_failure(vm, 20)
    assert.truthy(err:find("QEMU was killed by signal 9 (SIGKILL)", 1, true), err)
  end)

  it("the vsock daemon's death names the daemon", function()
    if provium.host().vsock ~= "vhost-user" then
      pending("this host has kernel vhost-vsock: no daemon")
      return
    end
    local vm <close> = guest.boot("fault-daemon", { transport = "vsock" })
    -- The newest daemon is this VM's ([v]: not the shell running pgrep).
    local p = io.popen("pgrep -n -f '[v]host-device-vsock'")
    local pid = p:read("l")
    p:close()
    assert.is_truthy(pid)
    os.execute("kill -9 " .. pid)
    local err = next_failure(vm, 20)
    assert.truthy(err:find("vhost-device-vsock (the VM's vsock device) was killed by signal 9", 1, true), err)
  end)
end)

--- Whether a QEMU of VM `name` is still running (`name` must start with a
--- letter in brackets so that pgrep does not match its own shell).
local function qemu_alive(pattern)
  return sh("pgrep -f 'provium:" .. pattern .. "' || true"):match("%d") ~= nil
end

describe("a frozen guest", function()
  it("halt -f ends the VM as shut down, and QEMU goes", function()
    local vm <close> = guest.boot("fault-halt")
    local t0 = provium.now()
    pcall(vm.run, vm, "halt -f")
    while vm:state() == "booted" and provium.now() < t0 + 20 do
      pcall(vm.stat, vm, "/")
    end
    assert.are.equal("shutdown", vm:state())
    assert.is_true(provium.now() - t0 < 20)
    local err = guest.error_of(vm.stat, vm, "/")
    assert.truthy(err:find("VM is shutdown; create a new one (cannot stat): the guest halted", 1, true), err)
    assert.is_false(qemu_alive("[f]ault-halt"))
  end)

  it("a stopped QEMU fails the waiting call at the stall timeout, saying so", function()
    local vm <close> = guest.boot("fault-sigstop", { stall_timeout = 3 })
    assert(os.execute("pkill -STOP -f 'provium:[f]ault-sigstop'"))
    local t0 = provium.now()
    local err = guest.error_of(vm.stat, vm, "/")
    local took = provium.now() - t0
    assert.truthy(took >= 2.9 and took < 8, "failed after " .. took .. " s")
    assert.truthy(err:find("the guest stopped answering: nothing from the agent for 3 s", 1, true), err)
    assert.truthy(err:find("is stopped (SIGSTOP", 1, true), err)
    assert.are.equal("dead", vm:state())
    -- pause needs QEMU's monitor, which a stopped QEMU cannot serve: at once.
    local t1 = provium.now()
    err = guest.error_of(vm.pause, vm)
    assert.truthy(provium.now() - t1 < 2, err)
    vm:close()
    assert.is_false(qemu_alive("[f]ault-sigstop"))
  end)

  it("a stopped agent fails a running command at the stall timeout", function()
    local vm <close> = guest.boot("fault-agent-stop", { stall_timeout = 3 })
    local t0 = provium.now()
    -- The shell's parent is the op server.
    local err = guest.error_of(vm.run, vm, "kill -STOP $PPID; sleep 60")
    local took = provium.now() - t0
    assert.truthy(took >= 2.9 and took < 8, "failed after " .. took .. " s")
    assert.truthy(err:find("nothing from the agent for 3 s; QEMU %(pid %d+%) is running") ~= nil, err)
  end)

  it("stall_timeout is checked", function()
    local err = guest.error_of(provium.vm, provium, "x", "default", { stall_timeout = 0.5 })
    assert.truthy(err:find("opts.stall_timeout must be at least 1 s", 1, true), err)
    err = guest.error_of(provium.vm, provium, "x", "default", { stall_timeout = "soon" })
    assert.truthy(err:find("opts.stall_timeout: cannot parse duration", 1, true), err)
    assert.are.equal("created", provium:vm("stall-none", "default", { stall_timeout = false }):state())
  end)

  it("Ctrl-C interrupts a blocked call at once, and nothing is left", function()
    local dir = (sh("mktemp -d /tmp/provium-sigint.XXXXXX")):gsub("%s+$", "")
    local script = dir .. "/script.lua"
    write(script, [[
      local vm = require("provium"):vm("sigint-victim", "default")
      vm:boot()
      io.stdout:write("READY\n") io.stdout:flush()
      local ok, err = pcall(vm.run, vm, "sleep 100")
      io.stdout:write("CAUGHT ", tostring(err):match("[^\n]*"), "\n") io.stdout:flush()
    ]])
    local child = assert(io.popen("exec sh -c 'echo $$; exec lua5.4 " .. script .. " 2>&1'", "r"))
    local pid = assert(tonumber(child:read("l")))
    assert.are.equal("READY", child:read("l"))
    os.execute("sleep 0.5")
    local t0 = provium.now()
    os.execute("kill -INT " .. pid)
    local rest = child:read("a")
    child:close()
    local took = provium.now() - t0
    assert.truthy(took < 3, "the child took " .. took .. " s to end")
    -- The call raised at once; lua5.4's own handler was chained too, so the
    -- error the script sees is ours or lua5.4's "interrupted!" (raised at
    -- the next Lua instruction, which may come first).
    assert.truthy(rest:find("CAUGHT [^\n]*interrupted") ~= nil, rest)
    os.execute("sleep 0.5")
    assert.is_false(qemu_alive("[s]igint-victim"))
    sh("rm -rf " .. dir)
  end)
end)

describe("the op server restarting", function()
  for _, transport in ipairs({ "serial", "vsock" }) do
    it("fails the calls in flight and leaves the VM usable (" .. transport .. ")", function()
      local vm <close> = guest.boot("fault-restart-" .. transport, { transport = transport })
      vm:write_file("/tmp/before", "x")
      local f = vm:open_file("/tmp/before", { read = true })
      local t0 = provium.now()
      -- The shell's parent is the op server; PID 1 starts a new one.
      local err = guest.error_of(vm.run, vm, "kill -9 $PPID; sleep 30")
      assert.truthy(provium.now() - t0 < 10, "took " .. (provium.now() - t0) .. " s")
      assert.truthy(err:find("the guest agent restarted", 1, true), err)
      assert.are.equal("booted", vm:state())
      assert.are.equal("ok\n", vm:run("echo ok").stdout)
      assert.are.equal("x", vm:read_file("/tmp/before"))
      -- Objects of the old server fail as unknown, never reach a new file.
      local g <close> = vm:open_file("/tmp/before", { read = true })
      err = guest.error_of(f.read, f, 1)
      assert.truthy(err:find("handle", 1, true), err)
      assert.are.equal("x", g:read(1))
      pcall(f.close, f)
    end)
  end
end)

describe("faults", function()
  local dir
  before_each(function() dir = (sh("mktemp -d /tmp/provium-faults.XXXXXX")):gsub("%s+$", "") end)
  after_each(function() sh("rm -rf " .. dir) end)

  it("SIGKILL of lua5.4 while its fixture is staged: no QEMU left, the next build sweeps the stage", function()
    local cache = dir .. "/cache"
    write(dir .. "/killed.fixture.lua", ([[
      -- unique: %d
      local provium = require("provium")
      local vm = provium:vm("staged", "default")
      vm:boot()
      local snap = vm:snapshot()
      io.stdout:write("STAGED\n") io.stdout:flush()
      while true do vm:stat("/") end
    ]]):format(math.random(1, 1e9)))
    write(dir .. "/other.fixture.lua", ([[
      -- unique: %d
      local vm = require("provium"):vm("other", "default")
      vm:boot()
      return vm:snapshot()
    ]]):format(math.random(1, 1e9)))
    write(dir .. "/use.lua", 'require("provium").vm_fixture(arg[1]):close()\n')
    local env = "PROVIUM_FIXTURE_CACHE=" .. cache .. " "
    local child = assert(io.popen("exec sh -c 'echo $$; exec env " .. env .. "lua5.4 " .. dir .. "/use.lua "
      .. dir .. "/killed'", "r"))
    local pid = assert(tonumber(child:read("l")))
    assert.are.equal("STAGED", child:read("l"))
    local stage = sh("ls -A " .. cache .. " | grep -e '^.tmp-stage.*-" .. pid .. "-0$'"):gsub("%s+$", "")
    assert.are_not.equal("", stage)
    os.execute("kill -9 " .. pid)
    child:close()
    -- QEMU dies with the process that started it.
    local left
    for _ = 1, 50 do
      left = sh("pgrep -f '/" .. pid .. "-[0-9]+/' || true")
      if left == "" then break end
      os.execute("sleep 0.1")
    end
    assert.are.equal("", left)
    assert.are_not.equal("", sh("ls -A " .. cache .. "/" .. stage))
    -- Another build in the same cache evicts, and sweeps the dead builder's stage.
    local out = sh("env " .. env .. "lua5.4 " .. dir .. "/use.lua " .. dir .. "/other")
    assert.is_nil(out:find("error", 1, true), out)
    assert.are.equal("", sh("ls -A " .. cache .. " | grep -e '^.tmp-stage' || true"))
  end)
end)
