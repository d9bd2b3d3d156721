-- Run by spec/assertions_spec.lua in a separate busted: every test here
-- fails on purpose, one way each.
local provium = require("provium")
require("provium.busted")

describe("on purpose", function()
  local vm
  setup(function() vm = provium.vm("on-purpose", "default"):boot() end)
  teardown(function() vm:close() end)

  it("a failed command", function()
    vm:run("echo kernel-line-for-the-tail > /dev/kmsg")
    assert.ok(vm:run("echo to-stdout; echo to-stderr >&2; exit 3"))
  end)

  it("a wrong exit code", function()
    assert.exit_code(0, vm:run("exit 2"))
  end)

  it("a guest file without the text", function()
    vm:write_file("/tmp/motd", "hello\n")
    assert.guest_file(vm, "/tmp/motd").contains("goodbye")
  end)

  it("a wrong errno", function()
    assert.errno("EACCES", vm.read_file, vm, "/nope")
  end)

  it("a plain assertion", function()
    assert.are.equal(1, 2)
  end)

  it("an error", function()
    error("raised on purpose")
  end)
end)
