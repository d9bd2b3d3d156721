#!/usr/bin/env lua5.4
-- Checks the module structure of the workspace's crates:
--   * no import cycle between modules of one crate (a module may not use,
--     directly or through others, a module that uses it back);
--   * no module over LIMIT lines of non-test code.
--
--   lua5.4 scripts/check-modules.lua          check; exit 1 on a finding
--   lua5.4 scripts/check-modules.lua --graph  also print each module's uses
--
-- It reads `crate::a::b` and `super::x` paths in each file's code (comments
-- and `#[cfg(test)] mod tests` left out): a plain reading of the source, no
-- compiler needed, and strict (a path in a doc link counts only when it is
-- code).

local LIMIT = 500
local CRATES = {
  { name = "provium", src = "src" },
  { name = "provium-protocol", src = "protocol/src" },
  { name = "provium-agent", src = "agent/src" },
  { name = "provium-cli", src = "cli/src" },
  { name = "provium-host-matrix", src = "host-matrix/src" },
}

local args = { ... }
if args[1] == "-h" or args[1] == "--help" then
  io.write("usage: lua5.4 scripts/check-modules.lua [--graph]\n",
    "  Fails on import cycles between a crate's modules and on modules over ", LIMIT,
    " lines of non-test code.\n")
  os.exit(0)
end
local show_graph = args[1] == "--graph"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function files_under(dir)
  local list = {}
  local p = assert(io.popen("find '" .. dir .. "' -name '*.rs' | sort"))
  for line in p:lines() do list[#list + 1] = line end
  p:close()
  return list
end

-- "src/lua/ops/mod.rs" -> "lua::ops"; "src/lib.rs" -> "" (the crate root).
local function module_of(src, file)
  local rel = file:sub(#src + 2):gsub("%.rs$", "")
  rel = rel:gsub("/mod$", "")
  if rel == "lib" or rel == "main" then return "" end
  return (rel:gsub("/", "::"))
end

-- The code of a file: no comments, no test module.
local function code_of(text)
  text = text:gsub("#%[cfg%(test%)%]%s*mod%s+tests%s*{.*$", "")
  text = text:gsub("#%[cfg%(test%)%]%s*mod%s+[%w_]+%s*;", "")
  text = text:gsub("//[^\n]*", "")
  text = text:gsub("/%*.-%*/", "")
  return text
end

local function count_lines(text)
  local _, n = text:gsub("\n", "")
  return n
end

local findings = 0
local function report(fmt, ...)
  findings = findings + 1
  io.write(string.format(fmt, ...), "\n")
end

for _, crate in ipairs(CRATES) do
  local mods, is_dir_mod = {}, {}
  for _, file in ipairs(files_under(crate.src)) do
    local m = module_of(crate.src, file)
    mods[m] = code_of(read(file))
    is_dir_mod[m] = file:match("/mod%.rs$") ~= nil or m == ""
    local n = count_lines(mods[m])
    if n > LIMIT then
      report("%s: %s has %d lines of non-test code (limit %d)", crate.name, file, n, LIMIT)
    end
  end
  -- Edges: module -> modules whose paths it names.
  local edges = {}
  for m, code in pairs(mods) do
    local deps = {}
    local base = {}
    for part in m:gmatch("[^:]+") do base[#base + 1] = part end
    for ref in code:gmatch("[%w_]*crate::[%w_:]+") do
      local path = {}
      for part in ref:gsub("^crate::", ""):gmatch("[^:]+") do path[#path + 1] = part end
      deps[#deps + 1] = path
    end
    for ref in code:gmatch("super::[%w_:]+") do
      local path = {}
      -- `super` is the parent of a file module, or of a directory module.
      for i = 1, #base - 1 do path[#path + 1] = base[i] end
      for part in ref:gsub("^super::", ""):gmatch("[^:]+") do path[#path + 1] = part end
      deps[#deps + 1] = path
    end
    local set = {}
    for _, path in ipairs(deps) do
      for k = #path, 1, -1 do
        local cand = table.concat(path, "::", 1, k)
        if mods[cand] and cand ~= m and m:sub(1, #cand + 2) ~= cand .. "::" then
          set[cand] = true
          break
        end
      end
    end
    edges[m] = set
  end
  if show_graph then
    local names = {}
    for m in pairs(edges) do names[#names + 1] = m end
    table.sort(names)
    for _, m in ipairs(names) do
      local to = {}
      for d in pairs(edges[m]) do to[#to + 1] = d end
      table.sort(to)
      io.write(crate.name, ": ", m == "" and "(root)" or m, " -> ", table.concat(to, ", "), "\n")
    end
  end
  -- Tarjan's strongly connected components.
  local index, low, stack, on, counter = {}, {}, {}, {}, 0
  local function strong(v)
    counter = counter + 1
    index[v], low[v] = counter, counter
    stack[#stack + 1] = v
    on[v] = true
    for w in pairs(edges[v]) do
      if not index[w] then
        strong(w)
        low[v] = math.min(low[v], low[w])
      elseif on[w] then
        low[v] = math.min(low[v], index[w])
      end
    end
    if low[v] == index[v] then
      local comp = {}
      repeat
        local w = table.remove(stack)
        on[w] = nil
        comp[#comp + 1] = w
      until w == v
      if #comp > 1 then
        table.sort(comp)
        report("%s: import cycle between %s", crate.name, table.concat(comp, ", "))
      end
    end
  end
  local names = {}
  for m in pairs(edges) do names[#names + 1] = m end
  table.sort(names)
  for _, m in ipairs(names) do
    if not index[m] then strong(m) end
  end
end

if findings > 0 then
  io.write(string.format("check-modules: %d finding(s)\n", findings))
  os.exit(1)
end
io.write("check-modules: no import cycles, no module over ", LIMIT, " lines\n")
