-- Objects outliving their VM, the console as a stream, daemons and run.
local provium = require("provium")
local guest = require("spec.support.guest")

describe("objects whose VM is closed", function()
  it("raise a clear error and close quietly", function()
    local vm = guest.boot("short-lived")
    vm:write_file("/tmp/f", "data")
    local f = vm:open_file("/tmp/f", { read = true })
    local t = vm:tail_file("/tmp/f")
    local p = vm:run_async("sleep 60")
    local w = vm:spawn_worker()
    vm:close()
    for _, call in ipairs({
      function() return f:read(1) end,
      function() return p:status() end,
      function() return w:stat("/") end,
    }) do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.is_string(err)
      assert.truthy(err:find('vm "short-lived"', 1, true), err)
    end
    -- A tail ends (its source is gone) or raises; it never hangs.
    local ok, got = pcall(t.next, t, "1s")
    assert.is_true(not ok or (got == nil and t:eof()))
    f:close()
    t:close()
    p:close()
    w:close()
    assert.are.equal(0, f:fd())
  end)
end)

describe("the console and background work", function()
  local vm

  lazy_setup(function() vm = guest.boot("console") end)
  lazy_teardown(function() if vm then vm:close() end end)

  it("console:read() follows the serial console", function()
    local c = vm:console():read()
    vm:run("echo provium-console-marker > /dev/console"):assert_ok()
    c:expect("provium-console-marker", "5s")
    c:close()
    vm:console():expect("provium-console-marker", "1s")
    assert.truthy(vm:console():read_log():find("provium-console-marker", 1, true))
  end)

  it("a daemon started with & and redirected output does not block run", function()
    local t0 = provium.now()
    vm:run("sleep 100 > /dev/null 2>&1 &"):assert_ok()
    assert.is_true(provium.now() - t0 < 5)
    vm:run("pkill sleep || true")
  end)
end)
