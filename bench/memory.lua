-- Host RAM per idle VM: N default VMs (booted, then restored from a
-- fixture): each one's guest RAM (the memfd's allocated pages), QEMU's own
-- proportional set size (Pss: shared pages such as QEMU's libraries and the
-- kernel image count 1/N) and the rock's share (the Lua process's Pss
-- growth / N); then one guest allocates and frees 160 MiB (dd's buffer; the
-- default guest has ~180 MiB free) and the figure is taken again.
-- Issue 12's target: 64 MiB per idle default VM.
-- Usage: lua5.4 bench/memory.lua [vms=4] [settle_s=4]
package.path = "bench/?.lua;" .. package.path
local provium = require("provium")
local u = require("util")
local guest = require("spec.support.guest") -- QEMU pids, guest RAM
u.host_probe(provium.now)

local count = tonumber(arg[1]) or 4
local settle = tonumber(arg[2]) or 4

local function rollup(pid)
  local f = io.open("/proc/" .. pid .. "/smaps_rollup")
  if not f then return nil end
  local t = {}
  for line in f:lines() do
    local k, v = line:match("^([%w_]+):%s+(%d+) kB")
    if k then t[k] = tonumber(v) / 1024 end
  end
  f:close()
  return t
end

local function self_pss()
  return rollup("self").Pss
end

local function report(label, names, base)
  local total, anon, ram, files = 0, 0, 0, 0
  for _, name in ipairs(names) do
    local pid = assert(guest.qemu_pid(name), "no QEMU process for vm " .. name)
    local r = assert(rollup(pid))
    local g = guest.guest_ram_mib(pid)
    total = total + r.Pss - r.Pss_Shmem + g
    anon = anon + r.Pss_Anon
    ram = ram + g
    files = files + r.Pss_File
  end
  local rock = math.max(0, self_pss() - base) / #names
  local n = #names
  print(string.format(
    "%-34s %6.1f MiB per VM = guest RAM %.1f + QEMU anon %.1f + QEMU files %.1f (Pss) + rock %.1f (target 64 MiB)",
    label, total / n + rock, ram / n, anon / n, files / n, rock))
end

local function idle(kind, make)
  collectgarbage()
  local base = self_pss()
  local vms, names = {}, {}
  for i = 1, count do
    vms[i] = make(kind .. i)
    names[i] = vms[i]:name()
    assert(vms[i]:read_file("/proc/version"))
  end
  os.execute("sleep " .. settle)
  report(string.format("%d idle VMs, %s:", count, kind), names, base)
  assert(vms[1]:run("dd if=/dev/zero of=/dev/null bs=160M count=1"):ok())
  os.execute("sleep " .. settle)
  report("vm 1 after 160 MiB in and out:", { names[1] }, base)
  for _, vm in ipairs(vms) do vm:close() end
end

provium.prepare_default_guest()
idle("booted", function(name) return provium.vm(name, "default"):boot() end)
do local vm = provium.vm_fixture("fixtures/warm") vm:close() end
idle("restored", function() return provium.vm_fixture("fixtures/warm") end)
