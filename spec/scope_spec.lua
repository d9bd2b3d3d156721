-- Scopes close what they opened, in reverse order; batches.
local provium = require("provium")
local guest = require("spec.support.guest")

describe("provium.scope and batches", function()
  local vm

  lazy_setup(function() vm = guest.boot("scopes") end)
  lazy_teardown(function() if vm then vm:close() end end)

  it("closes files, tails, processes and workers the scope opened", function()
    local f, t, p, w, pid
    local back = provium.scope(function()
      vm:write_file("/tmp/s", "x")
      f = vm:open_file("/tmp/s", { read = true })
      t = vm:tail_file("/tmp/s")
      p = vm:run_async("sleep 60")
      pid = p:pid()
      w = vm:spawn_worker()
      return "value"
    end)
    assert.are.equal("value", back)
    assert.are.equal(0, f:fd())
    assert.is_true(t:eof())
    assert.truthy(tostring(guest.error_of(p.status, p)):find("process is closed", 1, true))
    assert.are.equal("gone\n", vm:run("kill -0 " .. pid .. " 2>/dev/null && echo alive || echo gone").stdout)
    assert.truthy(tostring(guest.error_of(w.stat, w, "/")):find("worker is closed", 1, true))
  end)

  it("closes them when the function raises, and re-raises", function()
    local f
    local ok, err = pcall(provium.scope, function()
      f = vm:open_file("/etc/hostname", { read = true })
      error("boom", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("boom", err)
    assert.are.equal(0, f:fd())
  end)

  it("_provium_close_test_scope closes the current scope", function()
    provium.open_test_scope()
    local f = vm:open_file("/etc/hostname", { read = true })
    _provium_close_test_scope()
    assert.are.equal(0, f:fd())
  end)

  it("to-be-closed variables close at the end of the block", function()
    local outer
    do
      local f <close> = vm:open_file("/etc/hostname", { read = true })
      outer = f
      assert.is_true(f:fd() > 0)
    end
    assert.are.equal(0, outer:fd())
  end)

  it("a batch runs everything in one round trip, failures included", function()
    local results = vm:batch(function(b)
      b:write_file("/tmp/b1", "one")
      b:read_file("/nope")
      b:read_file("/tmp/b1")
      b:mkdir("/tmp/bd", true)
      b:run("echo batched")
      b:syscall(39)
      b:listdir("/tmp/bd")
      b:rename("/tmp/b1", "/tmp/b2")
      b:unlink("/tmp/b2")
    end)
    assert.are.equal(9, #results)
    assert.is_nil(results[1].err)
    assert.are.equal("ENOENT", results[2].err.code)
    assert.are.equal('vm:read_file("/nope"): ENOENT: No such file or directory', tostring(results[2].err))
    assert.are.equal("one", results[3].ok)
    assert.is_nil(results[4].err)
    assert.are.equal("batched\n", results[5].ok.stdout)
    assert.is_true(results[5].ok:ok())
    assert.is_true(results[6].ok.ret > 0)
    assert.are.same({}, results[7].ok)
    assert.is_nil(results[9].err)
    assert.are.same({}, vm:batch(function() end))
  end)

  it("a long batch keeps every row with its entry (results come in runs ahead of the reply)", function()
    local files = 200
    vm:batch(function(b)
      for i = 1, files do b:write_file("/tmp/lb" .. i, string.rep("y", i)) end
    end)
    for _, target in ipairs({ vm, vm:spawn_worker() }) do
      local results = target:batch(function(b)
        for i = 1, 1500 do
          if i % 9 == 0 then b:stat("/tmp/lb-missing") else b:stat("/tmp/lb" .. (i % files + 1)) end
        end
      end)
      assert.are.equal(1500, #results)
      for i = 1, 1500 do
        local r = results[i]
        if i % 9 == 0 then
          assert.are.equal("ENOENT", r.err and r.err.code, "row " .. i)
        else
          assert.are.equal(i % files + 1, r.ok and r.ok.size, "row " .. i)
        end
      end
      if target ~= vm then target:close() end
    end
  end)

  it("a batch raising in its function sends nothing", function()
    local ok = pcall(vm.batch, vm, function(b)
      b:write_file("/tmp/never", "x")
      error("changed my mind")
    end)
    assert.is_false(ok)
    assert.are.equal("ENOENT", guest.error_of(vm.stat, vm, "/tmp/never").code)
  end)
end)

describe("globals", function()
  it("provium defines no global but _provium_close_test_scope", function()
    local out = assert(io.popen([[lua5.4 -e '
      local before = {}
      for k in pairs(_G) do before[k] = true end
      require("provium")
      require("provium.assertions")
      for k in pairs(_G) do if not before[k] then print(k) end end' 2>&1]])):read("a")
    assert.are.equal("_provium_close_test_scope\n", out)
  end)
end)
