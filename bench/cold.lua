-- Cold boot, whole process: `lua5.4` starts, requires provium, boots the
-- default guest, answers one stat, closes it and exits; against libguestfs's
-- `guestfish -a /dev/null run` (forced to TCG, as we are), interleaved so
-- that drifts of the host hit both alike. Ratios are pairwise (run i of each).
-- Without guestfish on PATH only provium is timed.
-- Issue 12's targets: a median <= 1.5 s, and >= 7x faster than guestfish.
-- Usage: lua5.4 bench/cold.lua [runs=7]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
u.host_probe(provium.now)

local runs = tonumber(arg[1]) or 7
provium.prepare_default_guest() -- the image build is not part of a boot

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

local function timed(cmd)
  local t0 = provium.now()
  local ok = os.execute(cmd)
  local dt = provium.now() - t0
  assert(ok, "failed: " .. cmd)
  return dt
end

local ours = [[lua5.4 -e 'local p = require("provium"); local vm = p.vm("cold", "default"):boot(); ]]
  .. [[assert(vm:stat("/")); vm:close()' ]]
local theirs = "LIBGUESTFS_BACKEND_SETTINGS=force_tcg guestfish -a /dev/null run"
local guestfish = have("guestfish")
if guestfish then
  timed(theirs .. " >/dev/null 2>&1") -- builds libguestfs's appliance once
else
  print("guestfish not found (Debian: libguestfs-tools): timing provium alone")
end

local a, b, ratio = {}, {}, {}
for i = 1, runs do
  a[i] = timed(ours)
  if guestfish then
    b[i] = timed(theirs)
    ratio[i] = b[i] / a[i]
  end
end
print(string.format("cold boot, whole process, %d runs: median %.3f s, min %.3f s  [%s] (target 1.5 s)",
  runs, u.median(a), u.sorted(a)[1], u.fmt_list(a)))
if guestfish then
  print(string.format("guestfish -a /dev/null run (TCG), %d runs: median %.3f s, min %.3f s  [%s]",
    runs, u.median(b), u.sorted(b)[1], u.fmt_list(b)))
  print(string.format("provium is %.1fx faster (median of pairwise ratios; target 7x)  [%s]",
    u.median(ratio), u.fmt_list(ratio, "%.1f")))
end
