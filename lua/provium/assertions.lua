--- luassert assertions for guest results. `require("provium.busted")`
-- registers them; `require("provium.assertions")` does so without busted.
--
-- A failing assertion is a test *failure* (not an error) whose message names
-- the command or path, shows stdout and stderr verbatim, and ends with the
-- tail of the VM's console.
--
--     assert.ok(vm:run("make check"))                -- exited with code 0
--     assert.is_not.ok(vm:run("false"))
--     assert.exit_code(2, vm:run("grep x /nope"))
--     assert.guest_file(vm, "/etc/motd").contains("welcome")
--     assert.guest_file(vm, "/etc/motd").equals("exact contents\n")
--     assert.guest_file(vm, "/etc/motd").exists()
--     assert.guest_file(vm, "/usr/bin/tool").has_mode("0755")
--     assert.errno("ENOENT", vm.read_file, vm, "/nope")
-- @module provium.assertions

local assert = require("luassert")
local say = require("say")
local errors = require("provium.errors")
local object = require("provium.object")
local RunResult = require("provium.result")
local Console = require("provium.console")

local M = {}

-- Each assertion builds its whole message; luassert prints it as is.
local KEY = "assertion.provium.message"
say:set(KEY, "%s")

local function console_of(ud)
  if not ud then return "" end
  local s = Console._section(ud, 20)
  return s == "" and "" or ("\n" .. s)
end

-- Sets the message luassert shows when the assertion fails.
local function fail_with(arguments, msg)
  for i = 1, arguments.n do arguments[i] = nil end
  arguments[1], arguments.n, arguments.nofmt = msg, 1, { true }
end

local function is_result(r)
  return getmetatable(r) == RunResult
end

local function need_result(name, r)
  if not is_result(r) then
    error(string.format("assert.%s: expected a RunResult (what vm:run returns), got %s",
      name, type(r)), 4)
  end
end

-- assert.ok(result [, message])
local function ok(state, arguments)
  local r = arguments[1]
  need_result("ok", r)
  local passed = r:ok()
  local msg = arguments[2]
  if state.mod then
    fail_with(arguments, r:report(msg) .. console_of(RunResult._vm_ud(r)))
  else
    fail_with(arguments, string.format("%scommand %s succeeded, but was expected to fail",
      msg and (msg .. ": ") or "", r.command or "?"))
  end
  return passed
end

-- assert.exit_code(code, result [, message])
local function exit_code(state, arguments)
  local want, r = arguments[1], arguments[2]
  if math.type(want) ~= "integer" then
    error("assert.exit_code: expected an integer exit code first (got " .. type(want) .. ")", 4)
  end
  need_result("exit_code", r)
  local passed = r.status == "exited" and r.exit_code == want
  local msg = arguments[3]
  local head = string.format("%sexpected exit code %d, ", msg and (msg .. ": ") or "", want)
  if state.mod then
    fail_with(arguments, head .. r:report() .. console_of(RunResult._vm_ud(r)))
  else
    fail_with(arguments, string.format("%sexpected an exit code other than %d from command %s",
      msg and (msg .. ": ") or "", want, r.command or "?"))
  end
  return passed
end

local function guest_error_code(e)
  return getmetatable(e) == errors.GuestError and e.code or nil
end

-- assert.errno(code, fn, ...)
local function errno(state, arguments)
  local code, fn = arguments[1], arguments[2]
  if type(code) ~= "string" then
    error("assert.errno: expected an errno name such as \"ENOENT\" first (got " .. type(code) .. ")", 4)
  end
  if type(fn) ~= "function" then
    error("assert.errno: expected a function second (got " .. type(fn) .. ")", 4)
  end
  local res = table.pack(pcall(fn, table.unpack(arguments, 3, arguments.n)))
  local got = not res[1] and guest_error_code(res[2]) or nil
  local passed = got == code
  local what
  if res[1] then
    what = "the call returned normally"
  elseif got then
    what = "it raised " .. tostring(res[2])
  else
    what = "it raised an error that is not a guest error: " .. tostring(res[2])
  end
  if state.mod then
    fail_with(arguments, string.format("expected the call to fail with %s, but %s", code, what))
  else
    fail_with(arguments, string.format("expected the call not to fail with %s, but %s", code, what))
  end
  return passed
end

local function read(vm, path)
  local ok_, data = pcall(vm.read_file, vm, path)
  if ok_ then return data end
  return nil, data
end

-- File contents for a message: indented, the first 2000 bytes.
local function show(s, max)
  max = max or 2000
  local cut = ""
  if #s > max then s, cut = s:sub(1, max), string.format("\n    ... (%d bytes in all)", #s) end
  return "    " .. s:gsub("\n$", ""):gsub("\n", "\n    ") .. cut
end

local function file_check(name, check)
  return function(state, arguments)
    local vm, path = arguments[1], arguments[2]
    local passed, why = check(vm, path, table.unpack(arguments, 3, arguments.n))
    local prefix = string.format("guest file %s", path)
    if state.mod then
      fail_with(arguments, prefix .. ": " .. why .. console_of(object.vm_of(vm)))
    else
      fail_with(arguments, prefix .. ": expected not to " .. name .. ", but it does")
    end
    return passed
  end
end

local checks = {
  exists = function(vm, path)
    local ok_, st = pcall(vm.stat, vm, path)
    if ok_ then return true, "exists (" .. tostring(st.entry_type) .. ")" end
    return false, "expected to exist, but stat failed: " .. tostring(st)
  end,
  contains = function(vm, path, text)
    local data, err = read(vm, path)
    if not data then return false, "cannot be read: " .. tostring(err) end
    if data:find(text, 1, true) then return true, "contains the text" end
    return false, string.format("expected to contain:\n    %s\n  it contains:\n%s",
      text, show(data))
  end,
  equals = function(vm, path, want)
    local data, err = read(vm, path)
    if not data then return false, "cannot be read: " .. tostring(err) end
    if data == want then return true, "has the contents" end
    return false, string.format("expected contents (%d bytes):\n%s\n  actual contents (%d bytes):\n%s",
      #want, show(want), #data, show(data))
  end,
  has_mode = function(vm, path, mode)
    local want = mode
    if type(mode) == "string" then want = tonumber((mode:gsub("^0o", "")), 8) end
    local ok_, st = pcall(vm.stat, vm, path)
    if not ok_ then return false, "cannot be stat'ed: " .. tostring(st) end
    if st.perm == want then return true, string.format("has mode %04o", want) end
    return false, string.format("expected mode %04o, it has %04o", want or -1, st.perm)
  end,
}

local registered = false

local function internal_name(check)
  return "provium" .. check:gsub("_", "")
end

--- Registers the assertions with luassert (idempotent).
function M.register()
  if registered then return end
  registered = true
  assert:register("assertion", "ok", ok, KEY, KEY)
  assert:register("assertion", "exit_code", exit_code, KEY, KEY)
  assert:register("assertion", "errno", errno, KEY, KEY)
  for name, check in pairs(checks) do
    -- One token (luassert splits names at "_" and would find its own
    -- "equals" in "guest_file_equals").
    assert:register("assertion", internal_name(name), file_check(name, check), KEY, KEY)
  end
  -- assert.guest_file(vm, path) → a checker: .exists(), .contains(text),
  -- .equals(data), .has_mode(mode) (dot or colon).
  assert:register("assertion", "guest_file", function(_, arguments)
    local vm, path = arguments[1], arguments[2]
    if type(path) ~= "string" then
      error("assert.guest_file: expected (vm, path) (got path " .. type(path) .. ")", 4)
    end
    local checker = {}
    for name in pairs(checks) do
      checker[name] = function(...)
        local args = table.pack(...)
        local first = 1
        if args[1] == checker then first = 2 end
        return assert[internal_name(name)](vm, path, table.unpack(args, first, args.n))
      end
    end
    return true, { checker, n = 1 }
  end, KEY, KEY)
end

M.register()

return M
