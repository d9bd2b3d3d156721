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

return M
