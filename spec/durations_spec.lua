-- provium.durations: a busted run records `seconds path` per spec file, and
-- `provium shard --durations` balances shards with them. Real busted runs of
-- a small suite in a temporary directory; no VM.

local guest = require("spec.support.guest")
local sh, write, slurp = guest.sh, guest.write, guest.slurp

local CLI = os.getenv("PROVIUM_CLI") or "provium"

-- The `seconds path` lines of `file` (read here: loading provium.durations
-- into this busted run would record this run too).
local function read(file)
  local seconds, paths = {}, {}
  for line in slurp(file):gmatch("[^\n]+") do
    local secs, path = line:match("^(%S+) (.+)$")
    if secs and tonumber(secs) then
      seconds[path] = tonumber(secs)
      paths[#paths + 1] = path
    end
  end
  return seconds, paths
end

describe("provium.durations", function()
  local dir

  before_each(function()
    dir = (sh("mktemp -d /tmp/provium-durations-spec.XXXXXX"):gsub("%s+$", ""))
    sh("mkdir -p " .. dir .. "/spec")
    write(dir .. "/spec/slow_spec.lua",
      [[describe("slow", function() it("sleeps", function() os.execute("sleep 1.5") end) end)]])
    for _, name in ipairs({ "a", "b", "c" }) do
      write(dir .. "/spec/" .. name .. "_spec.lua",
        [[describe("quick", function() it("passes", function() assert.is_true(true) end) end)]])
    end
  end)
  after_each(function()
    if dir then sh("rm -rf " .. dir) end
  end)

  local function run_busted(env, files)
    return sh(string.format("cd %s && %s busted --lua=lua5.4 --helper=provium.durations %s", dir, env, files))
  end

  it("records each file's seconds, keeps other files' lines, and balances shards", function()
    write(dir .. "/d.txt", "# older run\n9.5 spec/gone_spec.lua\n7 ./spec/a_spec.lua\n")
    local out, code = run_busted("PROVIUM_DURATIONS=d.txt", "spec")
    assert.are.equal(0, code, out)
    local seconds, paths = read(dir .. "/d.txt")
    assert.are.equal(5, #paths, slurp(dir .. "/d.txt"))
    assert.are.equal(9.5, seconds["spec/gone_spec.lua"])
    assert.is_true(seconds["spec/slow_spec.lua"] >= 1.4 and seconds["spec/slow_spec.lua"] < 10,
      slurp(dir .. "/d.txt"))
    for _, name in ipairs({ "a", "b", "c" }) do
      assert.is_true(seconds["spec/" .. name .. "_spec.lua"] < 1, slurp(dir .. "/d.txt"))
    end
    -- Two shards: the slow file alone on one, the three quick ones on the other.
    local shards = {}
    for i = 0, 1 do
      local list, c = sh(string.format("cd %s && %s shard --total 2 --index %d --durations d.txt spec/",
        dir, CLI, i))
      assert.are.equal(0, c, list)
      shards[i] = list
    end
    local slow = shards[0]:find("slow_spec", 1, true) and 0 or 1
    assert.are.equal("spec/slow_spec.lua\n", shards[slow])
    assert.are.equal("spec/a_spec.lua\nspec/b_spec.lua\nspec/c_spec.lua\n", shards[1 - slow])
  end)

  it("writes .provium-durations by default and records only the files run", function()
    local out, code = run_busted("PROVIUM_DURATIONS=", "./spec/b_spec.lua")
    assert.are.equal(0, code, out)
    local seconds, paths = read(dir .. "/.provium-durations")
    assert.are.same({ "spec/b_spec.lua" }, paths)
    assert.is_true(seconds["spec/b_spec.lua"] < 1)
  end)

  it("a malformed or unwritable file is reported, never clobbered, and the run still passes", function()
    local bad = "1.5 spec/a_spec.lua\nfast spec/b_spec.lua\n"
    write(dir .. "/bad.txt", bad)
    local out, code = run_busted("PROVIUM_DURATIONS=bad.txt", "spec/a_spec.lua")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("provium.durations: provium.durations.read: bad.txt:2 is not `seconds path`", 1, true), out)
    assert.are.equal(bad, slurp(dir .. "/bad.txt"))
    out, code = run_busted("PROVIUM_DURATIONS=" .. dir .. "/no/such/dir/d.txt", "spec/a_spec.lua")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("provium.durations: provium.durations.write: cannot write", 1, true), out)
    assert.are.equal("", sh("ls " .. dir .. " | grep tmp- || true"))
  end)
end)
