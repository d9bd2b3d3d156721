-- 20 specs that each get a fresh VM from one fixture, read a file and close
-- it: what bench/fresh_busted.lua times under busted.
local provium = require("provium")

describe("a fresh VM per spec", function()
  for i = 1, tonumber(os.getenv("BENCH_SPECS") or "20") do
    it("spec " .. i, function()
      local vm <close> = provium.vm_fixture("../fixtures/warm") -- relative to this file
      assert.are.equal("yes", vm:read_file("/etc/bench-ready"))
    end)
  end
end)
