-- The run directory base must be ours alone: QEMU writes logs and sockets
-- below it by path, so a base another user owns could redirect those writes.

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local uid = assert(tonumber((sh("id -u"))))

--- Boots a VM in a child lua5.4 whose TMPDIR is `tmp` (no XDG_RUNTIME_DIR);
--- returns what it printed.
local function boot_with_tmpdir(tmp)
  return (sh("env -u XDG_RUNTIME_DIR TMPDIR=" .. tmp .. [[ lua5.4 -e '
    local vm = require("provium"):vm("rundir", "default")
    local ok, err = pcall(vm.boot, vm)
    print(ok and "booted" or tostring(err))
    vm:close()']]))
end

describe("the run directory", function()
  local tmp
  before_each(function()
    tmp = (sh("mktemp -d")):gsub("%s+$", "")
  end)
  after_each(function()
    sh("rm -rf " .. tmp)
  end)

  it("is refused when another user owns it, and nothing is written there", function()
    if uid ~= 0 then
      pending("needs root to create a directory owned by another user")
      return
    end
    local base = tmp .. "/provium-" .. uid
    assert(os.execute("mkdir -m 0777 " .. base .. " && chown 65534:65534 " .. base))
    local out = boot_with_tmpdir(tmp)
    assert.truthy(out:find("refusing the run directory " .. base .. ": it belongs to uid 65534", 1, true), out)
    assert.are.equal("", (sh("ls -A " .. base)))
  end)

  it("is refused when it is a symbolic link", function()
    local elsewhere = tmp .. "/elsewhere"
    assert(os.execute("mkdir -m 0700 " .. elsewhere .. " && ln -s " .. elsewhere .. " " .. tmp .. "/provium-" .. uid))
    local out = boot_with_tmpdir(tmp)
    assert.truthy(out:find("it is a symbolic link", 1, true), out)
    assert.are.equal("", (sh("ls -A " .. elsewhere)))
  end)

  it("of our own with a loose mode is made private and used", function()
    local base = tmp .. "/provium-" .. uid
    assert(os.execute("mkdir -m 0777 " .. base .. " && chmod 0777 " .. base))
    local out = boot_with_tmpdir(tmp)
    assert.are.equal("booted\n", out)
    assert.are.equal("700", (sh("stat -c %a " .. base)):gsub("%s+$", ""))
  end)
end)
