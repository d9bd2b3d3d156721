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
