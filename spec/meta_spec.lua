-- The LuaLS meta file, the API reference generated from it, and the
-- examples in both the reference and the README: they must match the code.
local provium = require("provium")
local guest = require("spec.support.guest")
local gen = dofile("scripts/gen-docs.lua")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local doc = gen.parse(read("lua/provium/_meta.lua"))

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function sorted_keys(s)
  local l = {}
  for k in pairs(s) do l[#l + 1] = k end
  table.sort(l)
  return l
end

-- Public functions of a runtime table: function values whose names do not
-- start with "_" (metamethods and internals).
local function public(t)
  local s = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then s[k] = true end
  end
  return s
end

local function documented(name)
  local s = {}
  local by_name = {}
  for _, c in ipairs(doc.classes) do by_name[c.name] = c end
  local c = by_name[name]
  while c do
    for _, f in ipairs(c.functions) do s[f.name] = true end
    c = c.parent and by_name[c.parent]
  end
  return s
end

describe("the LuaLS meta file", function()
  local runtime = {
    ["provium"] = public(provium),
    ["provium.fixtures"] = public(provium.fixtures),
    ["provium.Batch"] = set_of(require("provium.guest_ops").BATCHABLE),
  }
  for _, class in ipairs({ "Vm", "Worker", "File", "Tail", "Process", "Snapshot", "Console", "RunResult" }) do
    runtime["provium." .. class] = public(provium[class])
  end

  for name, have in pairs(runtime) do
    it("documents exactly the functions of " .. name, function()
      local want = documented(name)
      local missing, extra = {}, {}
      for k in pairs(have) do if not want[k] then missing[#missing + 1] = k end end
      for k in pairs(want) do if not have[k] then extra[#extra + 1] = k end end
      table.sort(missing)
      table.sort(extra)
      assert.are.same({ missing = {}, extra = {} }, { missing = missing, extra = extra })
    end)
  end

  it("gives every function a description and every class its fields' types", function()
    for _, c in ipairs(doc.classes) do
      for _, f in ipairs(c.functions) do
        if c.name ~= "provium.Batch" then
          assert.truthy(#f.text > 0, c.name .. "." .. f.name .. " has no description")
        end
      end
      for _, f in ipairs(c.fields) do
        assert.truthy(f.type ~= "", c.name .. "." .. f.name .. " has no type")
      end
    end
  end)

  it("is what docs/API.md was generated from", function()
    assert.are.equal(gen.render(doc), read("docs/API.md"),
      "docs/API.md is stale: run lua5.4 scripts/gen-docs.lua")
  end)

  it("is installed by the rockspec", function()
    local spec = read("provium-0.1.0-1.rockspec")
    assert.truthy(spec:find('["provium._meta"] = "lua/provium/_meta.lua"', 1, true))
    -- Every Lua module of the rock is installed.
    for file in io.popen("ls lua/provium"):lines() do
      local mod = "provium." .. file:gsub("%.lua$", "")
      assert.truthy(spec:find('["' .. mod .. '"] = "lua/provium/' .. file .. '"', 1, true), mod)
    end
  end)
end)

describe("documentation examples", function()
  local vm
  setup(function() vm = guest.boot("docs") end)
  teardown(function() vm:close() end)

  local function examples(path)
    local list = {}
    local text = read(path)
    local line = 1
    local pos = 1
    while true do
      local s, e, code = text:find("```lua\n(.-)```", pos)
      if not s then break end
      local _, nl = text:sub(1, s):gsub("\n", "")
      list[#list + 1] = { code = code, where = path .. ":" .. (nl + 2) }
      pos = e + 1
    end
    return list
  end

  for _, path in ipairs({ "docs/API.md", "README.md" }) do
    it("run as written in " .. path, function()
      local list = examples(path)
      assert.truthy(#list > 0, "no examples in " .. path)
      for _, ex in ipairs(list) do
        if ex.code:find('require("provium.busted")', 1, true) then
          -- A spec file: run it with busted, as a user would.
          local dir = os.tmpname()
          os.remove(dir)
          assert(os.execute("mkdir -p " .. dir))
          local f = assert(io.open(dir .. "/example_spec.lua", "w"))
          f:write(ex.code)
          f:close()
          local p = assert(io.popen("cd " .. dir .. " && busted --lua=lua5.4 -o plainTerminal example_spec.lua 2>&1"))
          local out = p:read("a")
          p:close()
          os.execute("rm -rf " .. dir)
          assert(out:find(" 0 failures / 0 errors", 1, true) and not out:find("\n0 successes"),
            ex.where .. " failed under busted:\n" .. out)
          goto continue
        end
        -- What an example prints is not checked (and not shown between the dots).
        local env = setmetatable({ provium = provium, vm = vm, print = function() end }, { __index = _G })
        local chunk, err = load(ex.code, "=" .. ex.where, "t", env)
        assert(chunk, err)
        local ok, run_err = pcall(provium.scope, chunk)
        assert(ok, ex.where .. ": " .. tostring(run_err))
        ::continue::
      end
    end)
  end

  it("README links only to files in the repository", function()
    for _, file in ipairs({ "README.md", "DESIGN.md", "BENCHMARKS.md", "docs/API.md" }) do
      local text = read(file)
      assert.falsy(text:find("shared/", 1, true), file .. " mentions shared/")
      for target in text:gmatch("%]%(([^)#]+)[^)]*%)") do
        if not target:match("^%a+://") then
          local f = io.open(target, "rb")
          assert.truthy(f, file .. " links to " .. target .. ", which is not in the repository")
          if f then f:close() end
        end
      end
    end
  end)
end)
