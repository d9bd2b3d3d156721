-- provium.busted's luassert assertions: they pass on good results, and a
-- failing one is a busted *failure* whose message names the command or path,
-- shows the output verbatim and ends with the console tail.
local provium = require("provium")
require("provium.busted")
local guest = require("spec.support.guest")

-- The message of a failed assertion (busted's failure object or a string).
local function failure_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected the assertion to fail")
  return type(err) == "table" and tostring(err.message) or tostring(err)
end

describe("assertions", function()
  local vm
  setup(function() vm = guest.boot("assertions") end)
  teardown(function() vm:close() end)

  it("pass on the results they describe", function()
    assert.ok(vm:run("true"))
    assert.is_not.ok(vm:run("false"))
    assert.exit_code(0, vm:run("true"))
    assert.exit_code(7, vm:run("exit 7"))
    assert.errno("ENOENT", vm.read_file, vm, "/nope")
    assert.is_not.errno("EACCES", vm.read_file, vm, "/nope")
    vm:write_file("/tmp/a", "alpha beta", { perm = "0600" })
    assert.guest_file(vm, "/tmp/a").exists()
    assert.guest_file(vm, "/tmp/a").contains("beta")
    assert.guest_file(vm, "/tmp/a"):contains("alpha")
    assert.guest_file(vm, "/tmp/a").equals("alpha beta")
    assert.guest_file(vm, "/tmp/a").has_mode("0600")
    local proc = vm:run_async("exit 4")
    assert.exit_code(4, proc:wait())
    local res = vm:batch(function(b) b:run("exit 5") end)
    assert.exit_code(5, res[1].ok)
  end)

  it("fail with the command, its output verbatim and the console", function()
    vm:run("echo marker-from-the-kernel > /dev/kmsg")
    -- The kernel prints it to the serial console on its own time.
    vm:console():expect("marker-from-the-kernel", "10s")
    local msg = failure_of(assert.ok, vm:run("printf 'a \"quoted\"\\n\\tline'; echo err >&2; exit 3"))
    assert.truthy(msg:find('command printf \'a "quoted"\\n\\tline\'; echo err >&2; exit 3 exited with code 3', 1, true), msg)
    assert.truthy(msg:find('  stdout:\n    a "quoted"\n    \tline\n  stderr:\n    err\n', 1, true), msg)
    assert.truthy(msg:find('--- guest console of vm "assertions" (last 20 lines) ---', 1, true), msg)
    assert.truthy(msg:find("marker-from-the-kernel", 1, true), msg)
    msg = failure_of(assert.exit_code, 0, vm:run("busybox", { args = { "sh", "-c", "exit 2" } }))
    assert.truthy(msg:find("expected exit code 0, command busybox sh -c 'exit 2' exited with code 2", 1, true), msg)
    msg = failure_of(assert.is_not.ok, vm:run("true"))
    assert.truthy(msg:find("command true succeeded, but was expected to fail", 1, true), msg)
    msg = failure_of(assert.errno, "EACCES", vm.read_file, vm, "/nope")
    assert.truthy(msg:find('expected the call to fail with EACCES, but it raised vm:read_file("/nope"): ENOENT', 1, true), msg)
    msg = failure_of(assert.errno, "ENOENT", vm.read_file, vm, "/proc/version")
    assert.truthy(msg:find("expected the call to fail with ENOENT, but the call returned normally", 1, true), msg)
    vm:write_file("/tmp/b", "actual text\n")
    msg = failure_of(function() assert.guest_file(vm, "/tmp/b").contains("wanted") end)
    assert.truthy(msg:find("guest file /tmp/b: expected to contain:\n    wanted\n  it contains:\n    actual text", 1, true), msg)
    msg = failure_of(function() assert.guest_file(vm, "/tmp/none").exists() end)
    assert.truthy(msg:find("guest file /tmp/none: expected to exist, but stat failed", 1, true), msg)
    msg = failure_of(function() assert.guest_file(vm, "/tmp/b").has_mode("0755") end)
    assert.truthy(msg:find("guest file /tmp/b: expected mode 0755, it has 0644", 1, true), msg)
  end)

  it("raise a plain error when misused", function()
    local ok, err = pcall(assert.ok, "not a result")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("assert.ok: expected a RunResult", 1, true), tostring(err))
  end)

  it("make a failing test a failure, not an error, with the console tail once", function()
    local cmd = "cd spec/busted_fixtures && busted --lua=lua5.4 -o plainTerminal fails_on_purpose.lua 2>&1"
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("0 successes / 5 failures / 1 error / 0 pending", 1, true), out)
    -- Each report: "Failure -> file @ line\nname\nmessage...", up to the next.
    -- The reports, each from "Failure -> " or "Error -> " to the next one.
    local blocks, starts = {}, {}
    for pos in out:gmatch("\n()%a+ %-> ") do starts[#starts + 1] = pos end
    for i, pos in ipairs(starts) do
      blocks[i] = out:sub(pos, (starts[i + 1] or #out + 1) - 1)
    end
    local function block_of(name)
      for _, b in ipairs(blocks) do
        if b:find("\non purpose " .. name .. "\n", 1, true) then return b end
      end
      error("no report for " .. name .. " in:\n" .. out)
    end
    local failed = block_of("a failed command")
    assert.truthy(failed:find("^Failure %-> "), failed)
    assert.truthy(failed:find("fails_on_purpose.lua:13: command echo to-stdout; echo to-stderr >&2; exit 3 exited with code 3\n"
      .. "  stdout:\n    to-stdout\n  stderr:\n    to-stderr\n", 1, true), failed)
    assert.truthy(failed:find("kernel-line-for-the-tail", 1, true), failed)
    -- The console tail appears once per failure, whoever added it.
    local _, tails = failed:gsub("%-%-%- guest console", "")
    assert.are.equal(1, tails, failed)
    for _, name in ipairs({ "a wrong exit code", "a guest file without the text", "a wrong errno", "a plain assertion" }) do
      local b = block_of(name)
      assert.truthy(b:find("^Failure %-> "), b)
      assert.truthy(b:find('--- guest console of vm "on-purpose" (last 20 lines) ---', 1, true), b)
    end
    assert.truthy(block_of("an error"):find("^Error %-> "))
    -- Nothing is printed between the progress marks.
    assert.truthy(out:find("^%-%-%-%-%-%*\n"), out)
  end)
end)
