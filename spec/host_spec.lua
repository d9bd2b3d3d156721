-- provium.host(): what this host offers VMs, and why.
local provium = require("provium")

--- Runs `code` in a fresh lua5.4 with `env` prepended; returns its output.
local function lua_with_env(env, code)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen(env .. " lua5.4 " .. tmp .. " 2>&1"))
  local out = p:read("a")
  p:close()
  os.remove(tmp)
  return out
end

describe("provium.host()", function()
  it("reports a consistent host kind with reasons", function()
    local h = provium.host()
    assert.is_true(h.accel == "kvm" or h.accel == "tcg", h.accel)
    assert.is_true(h.vsock == "kernel" or h.vsock == "vhost-user", h.vsock)
    local want = h.accel .. "-" .. (h.vsock == "kernel" and "kernel-vsock" or "vhost-user")
    assert.are.equal(want, h.kind)
    -- Serial only where vsock would need vhost-device-vsock (it cannot migrate).
    assert.are.equal(h.vsock == "kernel" and "vsock" or "serial", h.transport)
    for _, k in ipairs { "accel_reason", "vsock_reason", "transport_reason" } do
      assert.is_string(h[k])
      assert.is_true(#h[k] > 10, k .. ": " .. tostring(h[k]))
    end
  end)

  it("agrees with what the machine has", function()
    local h = provium.host()
    local kvm = io.open("/dev/kvm", "r+")
    if kvm then kvm:close() end
    local hw = io.open("/sys/module/kvm_amd") or io.open("/sys/module/kvm_intel")
    if hw then hw:close() end
    if not kvm then
      assert.are.equal("tcg", h.accel)
      assert.truthy(h.accel_reason:find("/dev/kvm cannot be opened", 1, true), h.accel_reason)
    elseif hw then
      assert.are.equal("kvm", h.accel)
    else
      -- /dev/kvm opens without a hardware KVM module: KVM only if the CPU
      -- has vmx/svm (a PVM /dev/kvm cannot run a stock kernel).
      local f = assert(io.open("/proc/cpuinfo"))
      local flags = f:read("a")
      f:close()
      local virt = flags:find("flags[^\n]*%f[%w]vmx%f[%W]") or flags:find("flags[^\n]*%f[%w]svm%f[%W]")
      assert.are.equal(virt and "kvm" or "tcg", h.accel, h.accel_reason)
    end
    local vhost = io.open("/dev/vhost-vsock", "r+")
    if vhost then vhost:close() end
    assert.are.equal(vhost and "kernel" or "vhost-user", h.vsock)
  end)

  it("follows PROVIUM_ACCEL and PROVIUM_VSOCK, and names bad values", function()
    local out = lua_with_env("PROVIUM_ACCEL=tcg PROVIUM_VSOCK=vhost-user",
      'local h = require("provium").host() print(h.kind, h.accel_reason, h.transport)')
    assert.are.equal("tcg-vhost-user\tPROVIUM_ACCEL=tcg\tserial\n", out)
    out = lua_with_env("PROVIUM_ACCEL=xen",
      'print(pcall(require("provium").host))')
    -- The message starts at the caller's file:line, like error(msg, 2).
    assert.truthy(out:find('^false\t/tmp/lua_%w+:1: provium%.host: PROVIUM_ACCEL="xen" is not one of "kvm", "tcg"'), out)
    out = lua_with_env("PROVIUM_VSOCK=tcp",
      'print(pcall(require("provium").host))')
    assert.truthy(out:find('PROVIUM_VSOCK="tcp" is not one of "kernel", "vhost-user"', 1, true), out)
  end)
end)
