-- Host memory: guest RAM is a memfd QEMU maps; the free-page-reporting
-- balloon gives the pages a guest freed back to the host.
local provium = require("provium")
local guest = require("spec.support.guest")

-- MiB of guest RAM the host holds for `vm`.
local function guest_ram_mib(vm)
  return guest.guest_ram_mib(assert(guest.qemu_pid(vm:name()), "no QEMU for " .. vm:name()))
end

-- Allocates and frees 160 MiB in the guest (dd's buffer), then waits up to
-- 20 s for the host's share to fall back near `idle`.
local function gives_back(vm)
  local idle = guest_ram_mib(vm)
  assert.is_true(vm:run("dd if=/dev/zero of=/dev/null bs=160M count=1"):ok())
  local peak = guest_ram_mib(vm)
  assert.is_true(peak > idle + 100, ("the guest touched 160 MiB: %.0f -> %.0f MiB"):format(idle, peak))
  local now = peak
  local deadline = provium.now() + 20
  while now > idle + 16 and provium.now() < deadline do
    os.execute("sleep 0.5")
    now = guest_ram_mib(vm)
  end
  assert.is_true(now <= idle + 16,
    ("guest RAM after 160 MiB in and out: %.0f MiB, idle %.0f, peak %.0f"):format(now, idle, peak))
end

describe("guest memory", function()
  it("is given back once the guest frees it", function()
    local vm <close> = provium:vm("mem-balloon", "default"):boot()
    gives_back(vm)
  end)

  it("is given back by a guest restored from a snapshot", function()
    local vm <close> = provium:vm("mem-balloon-src", "default"):boot()
    local snap = vm:snapshot()
    local r <close> = provium:vm("mem-balloon-restored", "default")
    r:restore(snap)
    gives_back(r)
    snap:delete()
  end)
end)
