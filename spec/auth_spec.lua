-- Only the rock that started a VM may drive its agent: host-initiated
-- connections to the agent's vsock port must show the VM's session token
-- first; anyone else gets nothing and is disconnected.
local provium = require("provium")
local guest = require("spec.support.guest")

describe("the agent's service port", function()
  local vm, ud
  setup(function()
    vm = guest.boot("auth", { transport = "vsock" })
    ud = rawget(vm, provium._UD)
  end)
  teardown(function() vm:close() end)

  it("serves the rock that started the VM", function()
    local ok, times = ud:_raw_echo(5, 64, 1)
    assert.is_true(ok, times)
    assert.are.equal(5, #times)
  end)

  it("gives a stranger nothing, whatever it sends, and closes", function()
    local hello = string.char(6, 0, 0, 0, 0, 3) .. string.rep("\0", 32)
    local proofs = {
      [""] = "nothing",
      ["PRVECHO\nhello"] = "the echo magic",
      ["PRVAUTH\n" .. string.rep("\0", 32)] = "a wrong token",
      [hello] = "a host hello",
    }
    for proof, what in pairs(proofs) do
      local t0 = provium.now()
      local ok, got, closed = ud:_raw_stranger(proof, 4)
      assert.is_true(ok, got)
      assert.are.equal("", got, what)
      assert.is_true(closed, what .. ": the agent closes the connection")
      assert.is_true(provium.now() - t0 < 3.5, what)
    end
    -- The VM is none the worse.
    assert.are.equal("ok\n", vm:run("echo ok").stdout)
    ok = ud:_raw_echo(2, 8, 0)
    assert.is_true(ok)
  end)
end)

-- The benchmarks' raw probes of the serial transport run on a second
-- virtio-serial port that only the host reaches (`_raw_port`).
describe("the raw serial port", function()
  it("echoes and moves bulk data for the benchmarks, only when asked for", function()
    local plain <close> = provium:vm("raw-port-none", "default", { transport = "serial" }):boot()
    local ok, err = rawget(plain, provium._UD):_raw_echo(1, 8, 0)
    assert.is_false(ok)
    assert.matches("_raw_port", tostring(err), 1, true)
    local vm <close> = provium:vm("raw-port", "default", { transport = "serial" })
    vm:boot({ _raw_port = true })
    local ud = rawget(vm, provium._UD)
    local times
    ok, times = ud:_raw_echo(5, 4096, 1)
    assert.is_true(ok, times)
    assert.are.equal(5, #times)
    for _, dir in ipairs({ "to_guest", "from_guest", "to_guest" }) do
      local rate
      ok, rate = ud:_raw_bulk(1 << 20, dir)
      assert.is_true(ok, rate)
      assert.is_true(rate > 0, dir)
    end
    -- The agent's own port is untouched.
    assert.are.equal("ok\n", vm:run("echo ok").stdout)
  end)
end)
