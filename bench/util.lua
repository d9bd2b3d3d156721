-- Small statistics helpers for the benchmarks.
local M = {}

function M.sorted(xs)
  local c = {}
  for i, x in ipairs(xs) do c[i] = x end
  table.sort(c)
  return c
end

function M.pct(xs, p)
  local s = M.sorted(xs)
  local i = math.max(1, math.min(#s, math.ceil(#s * p / 100)))
  return s[i]
end

function M.median(xs) return M.pct(xs, 50) end

function M.mean(xs)
  local t = 0
  for _, x in ipairs(xs) do t = t + x end
  return t / #xs
end

function M.fmt_list(xs, f)
  local out = {}
  for i, x in ipairs(xs) do out[i] = string.format(f or "%.3f", x) end
  return table.concat(out, " ")
end


--- Times a fixed CPU-bound Lua loop: this shared machine's speed swings by
-- up to 2x over minutes, and every figure here moves with it.
--- Seconds of CPU (user + system, all threads) process `pid` has used so
-- far, from /proc/<pid>/stat (clock ticks of 1/100 s).
function M.proc_cpu(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local line = f:read("a")
  f:close()
  -- Fields after the command name (which may hold spaces) start at 3.
  local rest = line:match("^.-%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

function M.host_probe(now)
  local t = now()
  local s = 0
  for i = 1, 20000000 do s = s + i % 7 end
  local ms = (now() - t) * 1000
  print(string.format("host CPU probe: %.0f ms (fixed Lua loop; lower is faster)", ms))
  return s
end

return M
