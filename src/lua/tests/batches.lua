-- Batches: recorded calls run in one round trip, in order; a failure does
-- not stop the rest; results are plain rows.
local T = {}

function T.rows_in_order_with_ok_and_err(vm, dir)
  local res = vm:batch(function(b)
    eq(b:write_file(dir .. "/a", "abc"), 1)
    eq(b:stat(dir .. "/a"), 2)
    b:read_file(dir .. "/nope")
    b:read_file(dir .. "/a")
    b:mkdir(dir .. "/d", true)
    b:symlink("a", dir .. "/l")
    b:chmod(dir .. "/a", "0600")
    b:rename(dir .. "/a", dir .. "/b")
    b:listdir(dir)
  end)
  eq(#res, 9)
  eq(res[2].ok.size, 3)
  eq(getmetatable(res[3].err), provium.GuestError)
  eq(res[3].err.code, "ENOENT")
  eq(res[3].ok, nil)
  eq(res[4].ok, "abc")
  local names = {}
  for _, e in ipairs(res[9].ok) do names[e.name] = true end
  assert(names.b and names.d and names.l and not names.a, "listdir after the rename")
  eq(vm:stat(dir .. "/b").mode & 4095, 384)
end

function T.run_in_a_batch_is_a_run_result(vm)
  local res = vm:batch(function(b)
    b:run("echo hi; exit 3")
    b:run("true")
  end)
  eq(getmetatable(res[1].ok), provium.RunResult)
  eq(res[1].ok.exit_code, 3)
  eq(res[1].ok.stdout, "hi\n")
  eq(res[1].ok:ok(), false)
  eq(res[2].ok:ok(), true)
end

function T.empty_batch(vm)
  local res = vm:batch(function() end)
  eq(#res, 0)
end

function T.object_ops_are_not_recorded(vm)
  local err = raises(vm.batch, vm, function(b) b:open_file("/x", { read = true }) end)
  contains(err, "open_file")
end

function T.a_raising_recorder_runs_nothing(vm, dir)
  local err = raises(vm.batch, vm, function(b)
    b:write_file(dir .. "/never", "x")
    error("stop here")
  end)
  contains(err, "stop here")
  local ok = pcall(vm.stat, vm, dir .. "/never")
  eq(ok, false)
end

-- Long batches get their results in runs ahead of the reply: every row
-- must still be the result of its own entry, in order, on VMs and workers.
local function long_batch(target, dir)
  local files = 300
  target:batch(function(b)
    for i = 1, files do b:write_file(dir .. "/f" .. i, string.rep("x", i)) end
  end)
  local n = 2000
  local res = target:batch(function(b)
    for i = 1, n do
      if i % 7 == 0 then
        b:stat(dir .. "/missing" .. i)
      elseif i % 11 == 0 then
        b:read_file(dir .. "/f" .. (i % files + 1))
      else
        b:stat(dir .. "/f" .. (i % files + 1))
      end
    end
  end)
  eq(#res, n)
  for i = 1, n do
    local r, want = res[i], i % files + 1
    if i % 7 == 0 then
      if not (r.err and r.err.code == "ENOENT" and r.ok == nil) then error("row " .. i .. ": not ENOENT") end
    elseif i % 11 == 0 then
      if r.ok ~= string.rep("x", want) then error("row " .. i .. ": wrong body") end
    elseif not (r.ok and r.ok.size == want) then
      error("row " .. i .. ": size " .. tostring(r.ok and r.ok.size) .. ", want " .. want)
    end
  end
end

function T.long_batch_rows_stay_in_order(vm, dir)
  long_batch(vm, dir)
end

function T.long_batch_in_a_worker(vm, dir)
  local w <close> = vm:spawn_worker()
  long_batch(w, dir)
end

return T
