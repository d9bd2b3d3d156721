-- Object lifetimes: Files, Tails, Processes and Workers survive misuse (after
-- close, after the agent died, from coroutines, in the garbage collector),
-- and scopes close what they created.
local T = {}

local function open_fds(vm)
  -- The agent's descriptors: a handle leak shows here.
  local pid = vm:syscall(39).ret -- getpid (the agent, run as a host process)
  local n = 0
  for _ in pairs(vm:listdir("/proc/" .. pid .. "/fd")) do n = n + 1 end
  return n
end

function T.file_after_close_raises_clearly(vm, dir)
  local f = vm:open_file(dir .. "/f", { write = true, create = true })
  eq(f:write("abc"), 3)
  f:close()
  f:close() -- idempotent
  eq(f:fd(), 0)
  contains(raises(f.write, f, "x"), "closed")
  contains(raises(f.read, f, 1), "closed")
end

function T.file_read_write_seek(vm, dir)
  local f <close> = vm:open_file(dir .. "/rw", { read = true, write = true, create = true, truncate = true })
  f:write("hello world")
  eq(f:tell(), 11)
  eq(f:seek(6), 6)
  eq(f:read(100), "world")
  eq(f:read(100), "")
  f:seek(0)
  eq(f:read_all(), "hello world")
  contains(raises(f.seek, f, 0, "sideways"), "file:seek: whence")
  contains(raises(f.read, f, -1), "file:read: ")
end

function T.scope_closes_in_reverse_and_on_error(vm, dir)
  vm:write_file(dir .. "/s", "x")
  local before = open_fds(vm)
  local f1, f2
  local ok = pcall(provium.scope, function()
    f1 = vm:open_file(dir .. "/s", { read = true })
    f2 = vm:open_file(dir .. "/s", { read = true })
    error("boom")
  end)
  eq(ok, false)
  eq(f1:fd(), 0)
  eq(f2:fd(), 0)
  eq(open_fds(vm), before)
  eq(provium.scope(function(a, b) return a + b end, 1, 2), 3)
end

function T.test_scope(vm, dir)
  vm:write_file(dir .. "/t", "x")
  provium.open_test_scope()
  local f = vm:open_file(dir .. "/t", { read = true })
  provium.close_test_scope()
  eq(f:fd(), 0)
end

function T.garbage_collector_closes_forgotten_handles(vm, dir)
  vm:write_file(dir .. "/g", "x")
  local before = open_fds(vm)
  for _ = 1, 50 do vm:open_file(dir .. "/g", { read = true }) end
  collectgarbage()
  collectgarbage()
  -- The closes are sent without waiting; a round trip after them orders them.
  vm:stat(dir .. "/g")
  eq(open_fds(vm), before)
end

function T.calls_from_coroutines(vm, dir)
  vm:write_file(dir .. "/c", "co")
  local co = coroutine.wrap(function()
    local f = vm:open_file(dir .. "/c", { read = true })
    coroutine.yield(f:read(1))
    coroutine.yield(f:read(1))
    f:close()
    return vm:read_file(dir .. "/c")
  end)
  eq(co(), "c")
  eq(co(), "o")
  eq(co(), "co")
end

function T.objects_after_the_vm_closed(vm, dir)
  vm:write_file(dir .. "/v", "x")
  local f = vm:open_file(dir .. "/v", { read = true })
  local p = vm:run_async("sleep 2") -- outlives the agent: keep it short
  vm:close()
  eq(vm:state(), "shutdown")
  contains(raises(vm.stat, vm, dir .. "/v"), "is gone")
  contains(raises(f.read, f, 1), 'file:read: vm "objects_after_the_vm_closed" is gone (the loopback VM was shut down)')
  contains(raises(p.wait, p, 1), 'proc:wait: vm "objects_after_the_vm_closed" is gone')
  f:close()
  p:close()
  vm:close()
end

function T.agent_death_is_an_infrastructure_error(vm, dir)
  local ud = rawget(vm, require("provium.object").UD)
  local p = vm:run_async("sleep 2") -- outlives the agent: keep it short
  ud:kill_agent()
  local err = raises(p.wait, p)
  -- Whether the reader or the writer notices first, the error names the
  -- call, the VM and the closed connection.
  contains(err, "proc:wait")
  contains(err, 'vm "agent_death_is_an_infrastructure_error"')
  contains(err, "closed")
  local err2 = raises(vm.stat, vm, dir)
  contains(err2, 'vm:stat: vm "agent_death_is_an_infrastructure_error" is gone')
  eq(vm:state(), "dead")
end

function T.processes_and_streams(vm)
  local p = vm:run_async("read line; echo got $line; echo err >&2; exit 4")
  assert(p:pid() > 0)
  eq(p:status(), "running")
  p:stdin_write("x\n")
  p:close_stdin()
  local out <close> = p:stdout_stream()
  eq(out:read_until("\n"), "got x\n")
  local r = p:wait(10)
  eq(r.exit_code, 4)
  eq(r.stderr, "err\n")
  eq(p:status(), "exited")
  contains(r:describe(), "exited with code 4")
  p:close()
end

function T.process_timeout_and_kill(vm)
  local r = vm:run("sleep 10", { timeout = "100ms" })
  eq(r.timed_out, true)
  eq(r.status, "timed_out")
  -- `sh -c` forks the sleep: kill ends the group, or the wait would last
  -- until the sleep ends (holding the output pipes).
  local p = vm:run_async("sleep 30; true")
  local started = provium.now()
  p:kill("KILL")
  local w = p:wait(20)
  assert(provium.now() - started < 10, "kill left the sleep running")
  eq(w.status, "signalled")
  eq(w.signal, 9)
  contains(raises(p.kill, p, "NOSUCHSIG"), "proc:kill: ")
end

function T.tails(vm, dir)
  local path = dir .. "/log"
  vm:write_file(path, "old\n")
  local t <close> = vm:tail_file(path)
  vm:run("echo ready >> " .. path)
  eq(t:expect("ready"), "ready")
  local b <close> = vm:tail_file(path, { start = "beginning" })
  eq(b:read_until("\n"), "old\n")
  contains(raises(t.expect, t, "never", "50ms"), "never")
  t:close()
  t:close()
  contains(raises(vm.tail_file, vm, path, { start = "middle" }), "vm:tail_file: ")
end

function T.workers_and_their_objects(vm, dir)
  local w = vm:spawn_worker()
  eq(w:run("echo w").stdout, "w\n")
  w:write_file(dir .. "/w", "x")
  eq(vm:read_file(dir .. "/w"), "x")
  local res = w:batch(function(b) b:stat(dir .. "/w") end)
  eq(res[1].ok.size, 1)
  eq(w.spawn_worker, nil) -- a VM-only op
  local ok, e = require("provium.core").call(rawget(w, require("provium.object").UD), "spawn_worker")
  eq(ok, false)
  contains(e, "worker:spawn_worker: workers cannot spawn worker; use vm:spawn_worker")
  w:close()
  contains(raises(w.stat, w, dir), "worker:stat")
  w:close()
end

return T
