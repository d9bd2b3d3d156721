-- VM lifecycle on the real default guest: boot, state, failures, shutdown.
local provium = require("provium")
local guest = require("spec.support.guest")

describe("a default guest", function()
  local vm

  lazy_setup(function()
    vm = provium:vm("life", "default")
  end)

  lazy_teardown(function()
    if vm then vm:close() end
  end)

  it("starts in state created and refuses guest ops", function()
    assert.are.equal("created", vm:state())
    local err = guest.error_of(vm.read_file, vm, "/etc/hostname")
    assert.is_string(err)
    assert.truthy(err:find('vm "life": VM not booted', 1, true))
  end)

  it("boots and answers", function()
    assert.are.equal(vm, vm:boot())
    assert.are.equal("booted", vm:state())
    assert.are.equal("provium\n", vm:read_file("/etc/hostname"))
    assert.truthy(tostring(vm):find("vm(life state=booted)", 1, true))
  end)

  it("is found by name", function()
    assert.are.equal(vm, provium:vm("life"))
    local err = guest.error_of(provium.vm, provium, "no-such-vm")
    assert.truthy(err:find('no VM named "no-such-vm"', 1, true))
  end)

  it("refuses a second boot and a duplicate name", function()
    local err = guest.error_of(vm.boot, vm)
    assert.truthy(err:find("VM already booted", 1, true))
    err = guest.error_of(provium.vm, provium, "life", "default")
    assert.truthy(err:find('a VM named "life" already exists', 1, true))
  end)

  it("runs the agent as PID 1 of a real kernel", function()
    local r = vm:run("cat /proc/1/comm; uname -s; cat /proc/cmdline")
    r:assert_ok()
    assert.truthy(r.stdout:find("Linux", 1, true))
    assert.truthy(r.stdout:find("provium.port=", 1, true) or r.stdout:find("provium.transport=serial", 1, true), r.stdout)
    local comm = r.stdout:match("^([^\n]*)")
    assert.are.equal("init", comm)
  end)

  it("runs syslogd, which logger reaches", function()
    vm:run("logger 'provium-lifecycle-marker'"):assert_ok()
    local found = false
    for _ = 1, 50 do
      local ok, log = pcall(vm.read_file, vm, "/var/log/messages")
      if ok and log:find("provium-lifecycle-marker", 1, true) then found = true break end
      vm:run("sleep 0.1")
    end
    assert.is_true(found)
  end)

  it("captures the serial console", function()
    local log = vm:console():read_log()
    assert.is_string(log)
    assert.truthy(#log > 0)
  end)

  it("shuts down cleanly and stays shut down", function()
    vm:shutdown()
    assert.are.equal("shutdown", vm:state())
    vm:shutdown() -- idempotent
    local err = guest.error_of(vm.stat, vm, "/")
    assert.truthy(err:find("VM is shutdown; create a new one", 1, true))
    err = guest.error_of(vm.boot, vm)
    assert.truthy(err:find("VM is shutdown", 1, true))
  end)
end)

describe("boot options", function()
  it("adds files to the initramfs", function()
    local vm <close> = provium:vm("files-opt", "default")
    vm:boot({ files = { { path = "/etc/extra/greeting", content = "hi\0there", mode = 0x180 } } })
    assert.are.equal("hi\0there", vm:read_file("/etc/extra/greeting"))
    assert.are.equal(0x180, vm:stat("/etc/extra/greeting").perm)
  end)

  it("boots two VMs concurrently with provium:boot()", function()
    local a = provium:vm("pair-a", "default")
    local b = provium:vm("pair-b", "default")
    provium:boot()
    assert.are.equal("booted", a:state())
    assert.are.equal("booted", b:state())
    a:write_file("/tmp/who", "a")
    b:write_file("/tmp/who", "b")
    assert.are.equal("a", a:read_file("/tmp/who"))
    assert.are.equal("b", b:read_file("/tmp/who"))
    a:close()
    b:close()
  end)
end)

describe("infrastructure failures", function()
  it("a guest kernel panic raises with the console tail", function()
    local vm <close> = provium:vm("panics", "default")
    local err = guest.error_of(vm.boot, vm, { kernel_cmdline_append = "rdinit=/does-not-exist", timeout = "60s" })
    assert.truthy(err:find('vm "panics": boot failed: the guest kernel panicked before the agent answered: VFS: Unable to mount root fs', 1, true), err)
    assert.truthy(err:find("guest console", 1, true), err)
    assert.truthy(err:find("Kernel panic", 1, true), err)
  end)

  it("an agent that never answers times out with the console tail", function()
    local vm <close> = provium:vm("silent", "default")
    local err = guest.error_of(vm.boot, vm, { kernel_cmdline_append = "provium.transport=vsock provium.port=9", timeout = "8s" })
    assert.truthy(err:find("did not answer within 8.0 s", 1, true), err)
    assert.truthy(err:find("guest console", 1, true), err)
    -- The message names the host kind and the transport.
    local host = provium.host()
    assert.truthy(err:find("host kind " .. host.kind .. ", " .. host.transport .. " transport", 1, true), err)
  end)

  it("closed VMs are not kept forever, recent ones are still found", function()
    for i = 1, 100 do provium:vm("closed-" .. i, "default"):close() end
    collectgarbage()
    collectgarbage()
    local kept = 0
    for _, name in ipairs(provium:vm_names()) do
      if name:find("^closed%-") then kept = kept + 1 end
    end
    assert.is_true(kept >= 16 and kept < 100, "kept " .. kept)
    assert.are.equal("shutdown", provium:vm("closed-100"):state())
  end)

  it("a guest that powers off is shut down, and calls raise", function()
    local vm <close> = guest.boot("victim")
    pcall(vm.run, vm, "poweroff -f")
    local deadline = os.time() + 20
    while vm:state() == "booted" and os.time() < deadline do
      pcall(vm.stat, vm, "/")
    end
    assert.are.equal("shutdown", vm:state())
    local err = guest.error_of(vm.stat, vm, "/")
    assert.truthy(err:find("VM is shutdown; create a new one (cannot stat): the guest powered off", 1, true), err)
  end)

  it("halt, poweroff and reboot without -f end the VM too (PID 1 handles their signals)", function()
    for _, cmd in ipairs({ "poweroff", "halt", "reboot" }) do
      local vm <close> = guest.boot("soft-" .. cmd)
      pcall(vm.run, vm, cmd)
      local deadline = os.time() + 20
      while vm:state() == "booted" and os.time() < deadline do
        pcall(vm.stat, vm, "/")
      end
      assert.are.equal("shutdown", vm:state(), cmd)
    end
  end)

  it("QEMU and the vsock daemon die with a SIGKILLed lua5.4", function()
    local script = [[
      local vm = require("provium"):vm("orphan", "default")
      vm:boot()
      io.write("READY\n") io.flush()
      while true do vm:stat("/") end
    ]]
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "w")) f:write(script) f:close()
    local child = assert(io.popen("exec sh -c 'echo $$; exec lua5.4 " .. tmp .. "'", "r"))
    local pid = assert(tonumber(child:read("l")))
    assert.are.equal("READY", child:read("l"))
    local function survivors()
      local p = io.popen("pgrep -f '/" .. pid .. "-[0-9]+/' || true")
      local out = p:read("a") p:close()
      return out
    end
    assert.are_not.equal("", survivors()) -- QEMU and the daemon run
    os.execute("kill -9 " .. pid)
    child:close()
    local left
    for _ = 1, 50 do
      left = survivors()
      if left == "" then break end
      os.execute("sleep 0.1")
    end
    os.remove(tmp)
    assert.are.equal("", left)
  end)
end)
