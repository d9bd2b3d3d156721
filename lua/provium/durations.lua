--- Records how long each spec file of a busted run takes, as the
-- `seconds path` lines that `provium shard --durations FILE` reads.
--
-- Load it as busted's helper, or require it from your own helper:
--
--     busted --helper=provium.durations spec/
--     PROVIUM_DURATIONS=ci/durations.txt busted --helper=provium.durations spec/
--
-- The file is `$PROVIUM_DURATIONS`, else `.provium-durations` in the working
-- directory (or what `record(path)` names). Lines of files this run did not
-- run are kept, so each shard of a suite can record into a copy of one file
-- and the copies can be concatenated (a later line of a path wins). The file
-- is replaced whole when the run ends, never left half written.
-- @module provium.durations

local busted = require("busted")

local M = {}

--- The file written when none is named.
M.DEFAULT_FILE = ".provium-durations"

-- Where to write, and the seconds of each file run so far.
local target
local measured = {}
local order = {}

-- A path as `provium shard` lists it: no leading `./`.
local function clean(path)
  return (path:gsub("^%./+", ""))
end

--- Reads a durations file → `{[path] = seconds}` and the paths in file
-- order; an absent file is empty. Malformed lines raise, naming the line.
-- @tparam string path
-- @treturn table seconds by path
-- @treturn table paths, in order
function M.read(path)
  if type(path) ~= "string" then
    error("provium.durations.read: path must be a string, got " .. type(path), 2)
  end
  local seconds, paths = {}, {}
  local f = io.open(path, "r")
  if not f then return seconds, paths end
  local n = 0
  for line in f:lines() do
    n = n + 1
    local trimmed = line:match("^%s*(.-)%s*$")
    if trimmed ~= "" and trimmed:sub(1, 1) ~= "#" then
      local secs, file = trimmed:match("^(%S+)%s+(.+)$")
      secs = tonumber(secs)
      if not secs or secs < 0 or secs ~= secs or secs == math.huge then
        f:close()
        error(string.format("provium.durations.read: %s:%d is not `seconds path`: %q", path, n, line), 2)
      end
      file = clean(file)
      if seconds[file] == nil then paths[#paths + 1] = file end
      seconds[file] = secs
    end
  end
  f:close()
  return seconds, paths
end

--- Writes `seconds` (`{[path] = seconds}`) to `path`, sorted by path,
-- through a temporary file renamed over it.
-- @tparam string path
-- @tparam table seconds
function M.write(path, seconds)
  if type(path) ~= "string" then
    error("provium.durations.write: path must be a string, got " .. type(path), 2)
  end
  if type(seconds) ~= "table" then
    error("provium.durations.write: seconds must be a table, got " .. type(seconds), 2)
  end
  local paths = {}
  for p in pairs(seconds) do paths[#paths + 1] = p end
  table.sort(paths)
  local tmp = string.format("%s.tmp-%d", path, math.random(1, 1e9))
  local f, err = io.open(tmp, "w")
  if not f then error("provium.durations.write: cannot write " .. tostring(err), 2) end
  f:write("# seconds path: how long each spec file took (provium.durations)\n")
  for _, p in ipairs(paths) do
    f:write(string.format("%.3f %s\n", seconds[p], p))
  end
  local ok, werr = f:close()
  if ok then ok, werr = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    error("provium.durations.write: cannot write " .. path .. ": " .. tostring(werr), 2)
  end
end

-- Merges this run's durations into the target file.
local function flush()
  if not target or #order == 0 then return end
  -- Called through pcall directly, their messages carry no position.
  local ok, seconds = pcall(M.read, target)
  local err = seconds
  if ok then
    for _, p in ipairs(order) do seconds[p] = measured[p] end
    ok, err = pcall(M.write, target, seconds)
  end
  if not ok then
    io.stderr:write("provium.durations: ", tostring(err), "\n")
  end
end

--- Records this run's spec file durations into `path` (default
-- `$PROVIUM_DURATIONS`, else `.provium-durations`) when the run ends.
-- Loading the module calls it; call it again to change the file.
-- @tparam[opt] string path
function M.record(path)
  if path ~= nil and type(path) ~= "string" then
    error("provium.durations.record: path must be a string, got " .. type(path), 2)
  end
  local env = os.getenv("PROVIUM_DURATIONS")
  target = path or (env ~= "" and env) or M.DEFAULT_FILE
end

busted.subscribe({ "file", "end" }, function(file)
  if type(file) == "table" and type(file.name) == "string" and type(file.duration) == "number" then
    local p = clean(file.name)
    if measured[p] == nil then order[#order + 1] = p end
    measured[p] = file.duration
  end
  return nil, true
end)

busted.subscribe({ "suite", "end" }, function()
  flush()
  return nil, true
end)

M.record()

return M
