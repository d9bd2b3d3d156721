---@meta provium
-- Types of provium's Lua API for lua-language-server (LuaLS): installed with
-- the rock, never loaded at run time. docs/API.md is generated from this file
-- (`lua5.4 scripts/gen-docs`); spec/meta_spec.lua checks that it lists
-- exactly the public functions and methods the modules define, and runs every
-- example below against a booted default guest (`vm`).
--
-- Durations are seconds (a number) or strings such as "500ms", "5s", "2m".
-- Sizes are bytes or strings such as "256M", "2G". Modes are integers or
-- octal strings such as "0755" (Lua has no octal literals).

---@alias provium.Duration number|string
---@alias provium.Size integer|string
---@alias provium.Mode integer|string
---@alias provium.VmState "created"|"booted"|"paused"|"dead"|"shutdown"
---@alias provium.EntryType "file"|"directory"|"symlink"|"fifo"|"socket"|"block_device"|"char_device"|"other"

---The module: `local provium = require("provium")`. Module functions work
---with a dot or a colon: `provium.vm(...)` and `provium:vm(...)` are the
---same call. Errors are raised at the caller's `file:line`.
---@class provium
---@field _VERSION string The rock's version, e.g. "0.1.0".
---@field version string Same as `_VERSION`.
---@field protocol_version integer Version of the host–agent protocol.
---@field fixtures provium.fixtures The fixture cache.
---@field Vm provium.Vm The VM class (for `getmetatable(x) == provium.Vm`).
---@field File provium.File The File class.
---@field Tail provium.Tail The Tail class.
---@field Process provium.Process The Process class.
---@field Worker provium.Worker The Worker class.
---@field Snapshot provium.Snapshot The Snapshot class.
---@field Console provium.Console The Console class.
---@field RunResult provium.RunResult The RunResult class.
---@field GuestError provium.GuestError The class of guest OS errors.
local provium = {}

---Creates a VM, or with a name alone looks one up. A name that belongs to a
---closed VM can be used again; a live one cannot.
---```lua
---local web <close> = provium.vm("doc-web", "default", { memory = "256M", run_timeout = "2m" })
---assert(web:state() == "created")
---assert(provium.vm("doc-web") == web)
---```
---@param name string
---@param profile string The guest profile: "default" is the built-in guest.
---@param opts? provium.VmOptions
---@return provium.Vm
---@overload fun(name: string): provium.Vm
function provium.vm(name, profile, opts) end

---Boots every created VM concurrently; returns the module.
---@return provium
function provium.boot() end

---Names of the VMs of this Lua state (live or recently closed), in creation order.
---@return string[]
function provium.vm_names() end

---Shuts every live VM down.
function provium.shutdown() end

---Runs `fn(...)`, then closes every File, Tail, Process and Worker it
---created, in reverse order, even when it raises. Returns what `fn` returned.
---```lua
---local n = provium.scope(function()
---  local f = vm:open_file("/etc/hostname", { read = true })
---  return #f:read_all()
---end) -- f is closed here
---assert(n > 0)
---```
---@generic T
---@param fn fun(...): T
---@param ... any
---@return T
function provium.scope(fn, ...) end

---Opens a test scope: what is created from now on is closed by
---`close_test_scope()`. `provium.busted` calls it before each test.
function provium.open_test_scope() end

---Closes the innermost test scope (also the global `_provium_close_test_scope`).
function provium.close_test_scope() end

---A booted VM resumed from the fixture that the Lua file `path .. ".fixture.lua"`
---builds (relative to the calling file). The builder runs on first use and
---returns a Snapshot; later calls, in any process, resume the cached snapshot
---until the builder or anything it depends on changes.
---
---Each call also starts restoring the next copy of the fixture in the
---background (a *spare*, one per fixture and process), which the next call
---takes: a suite that gives every spec its own VM from one fixture spends
---about 0.1 s per spec on it under TCG (restore, first answer and close). The spare is an idle VM until
---then (QEMU shows it as `provium:<name> (spare)`) and dies with the process;
---`PROVIUM_SPARE=0` turns spares off.
---
---With a remote store (`PROVIUM_FIXTURE_REMOTE=oci://host[:port]/repository`,
---or `remote` in the `[fixtures]` table of `provium.toml`), a fixture missing
---here is pulled from that OCI registry by its key before it is built, and a
---fixture built here is pushed. A registry that is down, slow or serving a
---damaged or foreign artifact costs one warning line and a local build, never
---an error.
---@param path string
---@return provium.Vm
function provium.vm_fixture(path) end

---Declares a host file a fixture depends on (read by the fixture scanner from
---the builder's source; a literal path). Does nothing at run time.
---@param path string
function provium.depends_on_file(path) end

---Builds, or finds in the cache, the default guest image.
---@return provium.GuestImage
function provium.prepare_default_guest() end

---What this host offers VMs, as detected now.
---```lua
---local h = provium.host()
---assert(h.accel == "kvm" or h.accel == "tcg")
---print(h.kind, h.accel_reason)
---```
---@return provium.HostReport
function provium.host() end

---Monotonic time in seconds (fractional), for timing.
---@return number
function provium.now() end

---The fixture cache: `$PROVIUM_FIXTURE_CACHE`, else
---`$XDG_CACHE_HOME/provium/fixtures`; capped at `$PROVIUM_FIXTURE_CACHE_MAX`
---(default 20G), least recently used entries evicted first.
---@class provium.fixtures
local fixtures = {}

---The cache's directory.
---@return string
function fixtures.dir() end

---The entries, least recently used first.
---```lua
---for _, e in ipairs(provium.fixtures.list()) do
---  assert(type(e.key) == "string" and e.size >= 0)
---end
---```
---@return provium.FixtureEntry[]
function fixtures.list() end

---Removes entry `key`; returns whether there was one.
---@param key string
---@return boolean
function fixtures.remove(key) end

---Removes every entry that is not being built; returns how many it removed.
---@return integer
function fixtures.clean() end

---Options of `provium.vm`.
---@class provium.VmOptions
---@field memory? provium.Size Guest memory (default "256M", at least "64M").
---@field cpus? integer vCPUs, 1 to 64 (default 1).
---@field transport? "vsock"|"serial" How the host reaches the agent (default: vsock where the host allows snapshots with it, else serial; see `provium.host()`).
---@field stall_timeout? provium.Duration|false How long a waiting call lets the agent stay silent before it raises (default 30 s, at least 1 s; false: no limit).
---@field run_timeout? provium.Duration|false Deadline of `run` and `proc:wait` when the call names none (default 600 s; false: none).

---Options of `vm:boot`.
---@class provium.BootOptions
---@field kernel_cmdline_append? string Appended to the kernel command line.
---@field files? provium.BootFile[] Extra files in the initramfs.
---@field timeout? provium.Duration Boot deadline (default 60 s).

---@class provium.BootFile
---@field path string Absolute guest path.
---@field content string
---@field mode? provium.Mode Default 0644.

---Options of `vm:restore`.
---@class provium.RestoreOptions
---@field timeout? provium.Duration Deadline (default 60 s).

---What `provium.host()` reports.
---@class provium.HostReport
---@field kind "kvm-kernel-vsock"|"kvm-vhost-user"|"tcg-kernel-vsock"|"tcg-vhost-user"
---@field accel "kvm"|"tcg"
---@field accel_reason string Why.
---@field vsock "kernel"|"vhost-user"
---@field vsock_reason string Why.
---@field transport "vsock"|"serial" What a VM gets when it names none.
---@field transport_reason string Why.

---@class provium.GuestImage
---@field kernel string Path of the kernel.
---@field initrd string Path of the initramfs.
---@field key string Cache key.
---@field kernel_release string e.g. "6.1.0-57-cloud-amd64".
---@field kernel_package string The Debian package and version.

---@class provium.FixtureEntry
---@field key string
---@field path string
---@field size integer Bytes on disk.
---@field last_used number Seconds since the epoch.
---@field builder? string The builder file.

---The guest operations, shared by VMs and Workers.
---@class provium.GuestOps
local GuestOps = {}

---Reads a whole file (binary-safe, any size: it streams in chunks).
---```lua
---local hostname = vm:read_file("/etc/hostname")
---assert(#hostname > 0)
---```
---@param path string
---@param opts? { max_size?: provium.Size|false } Stop with an error past this size (default "2G"; false: none).
---@return string
function GuestOps:read_file(path, opts) end

---Creates or replaces a file. Without `perm` a new file gets 0644 and an
---existing one keeps its mode; with `perm` it gets exactly that mode (no umask).
---```lua
---vm:write_file("/tmp/doc.conf", "key=value\n", { perm = "0600" })
---assert(vm:stat("/tmp/doc.conf").perm == tonumber("600", 8))
---```
---@param path string
---@param data string
---@param opts? provium.WriteOptions
function GuestOps:write_file(path, data, opts) end

---Copies a host file into the guest, keeping its permission bits (so a pushed
---program runs). A relative `host_path` is resolved against the directory of
---the calling Lua file.
---```lua
---local tmp = os.tmpname()
---local f = assert(io.open(tmp, "w")) f:write("#!/bin/sh\necho pushed\n") f:close()
---os.execute("chmod 0755 " .. tmp)
---vm:push_file(tmp, "/tmp/pushed.sh")
---assert(vm:run("/tmp/pushed.sh").stdout == "pushed\n")
---os.remove(tmp)
---```
---@param host_path string
---@param guest_path string
---@param opts? provium.PushOptions
function GuestOps:push_file(host_path, guest_path, opts) end

---`stat(2)` (or `lstat(2)` with `follow = false`).
---```lua
---local st = vm:stat("/etc/passwd")
---assert(st.entry_type == "file" and st.size > 0 and st.uid == 0)
---```
---@param path string
---@param opts? { follow?: boolean }
---@return provium.Stat
function GuestOps:stat(path, opts) end

---Lists a directory (no `.` and `..`), in directory order; a listing of any size.
---```lua
---local names = {}
---for _, e in ipairs(vm:listdir("/")) do names[e.name] = e.entry_type end
---assert(names.etc == "directory")
---```
---@param path string
---@return provium.DirEntry[]
function GuestOps:listdir(path) end

---Creates a directory (mode `perm`, default 0755, umask applies); with
---`parents`, missing parents are created and an existing directory is fine.
---```lua
---vm:mkdir("/tmp/doc/a/b", { parents = true })
---```
---@param path string
---@param opts? { parents?: boolean, perm?: provium.Mode }
function GuestOps:mkdir(path, opts) end

---Removes a file, or an empty directory.
---@param path string
function GuestOps:unlink(path) end

---`rename(2)`.
---@param from string
---@param to string
function GuestOps:rename(from, to) end

---Sets exactly `mode` (follows symlinks).
---```lua
---vm:write_file("/tmp/doc-tool", "#!/bin/sh\n")
---vm:chmod("/tmp/doc-tool", "0755")
---```
---@param path string
---@param mode provium.Mode
function GuestOps:chmod(path, mode) end

---Creates `path`, a symbolic link to `target` (which need not exist).
---```lua
---vm:symlink("/etc/hostname", "/tmp/doc-link")
---assert(vm:stat("/tmp/doc-link", { follow = false }).entry_type == "symlink")
---assert(vm:read_file("/tmp/doc-link") == vm:read_file("/etc/hostname"))
---```
---@param target string
---@param path string
function GuestOps:symlink(target, path) end

---Runs a command to completion: `run("shell command")`, `run(prog, {args...})`
---or `run(prog, {args=, env=, ...})`. A failing command is a result, not an
---error; past its timeout the process group is killed (`timed_out`).
---```lua
---local r = vm:run("echo out; echo err >&2; exit 3")
---assert(r.exit_code == 3 and r.stdout == "out\n" and r.stderr == "err\n")
---assert(vm:run("uname", { "-s" }).stdout == "Linux\n")
---assert(vm:run("sh", { args = { "-c", "echo $X" }, env = { X = "1" } }).stdout == "1\n")
---assert(vm:run("sleep 10", { timeout = "200ms" }).timed_out)
---```
---@param cmd string
---@param args_or_opts? string[]|provium.RunOptions
---@return provium.RunResult
function GuestOps:run(cmd, args_or_opts) end

---Starts a command (the forms of `run`, without `timeout` or `max_output`)
---and returns at once.
---```lua
---local p <close> = vm:run_async("read line; echo got $line")
---p:stdin_write("hello\n")
---p:close_stdin()
---assert(p:wait().stdout == "got hello\n")
---```
---@param cmd string
---@param args_or_opts? string[]|provium.RunOptions
---@return provium.Process
function GuestOps:run_async(cmd, args_or_opts) end

---Opens a file.
---```lua
---local f <close> = vm:open_file("/tmp/doc-handle", { write = true, create = true, truncate = true })
---f:write("abc")
---f:seek(0)
---```
---@param path string
---@param mode provium.OpenMode
---@return provium.File
function GuestOps:open_file(path, mode) end

---Follows a file, like `tail -f`: from its end (default), its beginning or a
---byte offset. The agent is woken by inotify.
---```lua
---vm:write_file("/tmp/doc.log", "")
---local t <close> = vm:tail_file("/tmp/doc.log")
---vm:run("echo ready >> /tmp/doc.log")
---t:expect("ready")
---```
---@param path string
---@param opts? { start?: "end"|"beginning"|"start"|integer }
---@return provium.Tail
function GuestOps:tail_file(path, opts) end

---Follows an open File (or a handle id) from its cursor.
---@param file provium.File|integer
---@return provium.Tail
function GuestOps:fd_stream(file) end

---`ioctl(2)` on an open File; raises on a negative return.
---@param file provium.File|integer
---@param cmd integer
---@param data? string The argument buffer (in and out).
---@param opts? { bufs?: string[], ptr_offsets?: integer[] }
---@return provium.IoctlResult
function GuestOps:ioctl(file, cmd, data, opts) end

---A raw system call; never raises for the call's own error (see `errno`).
---Arguments are integers, or strings passed as pointers to NUL-terminated
---copies (paths, names; `out_bufs` holds them after the call, in order).
---The table form `{args=, bufs=, ptrs=, nested=}` passes buffers the call
---fills.
---```lua
---local r = vm:syscall(39) -- getpid
---assert(r.ret > 0 and r.errno == 0)
---local fd = vm:syscall(257, -100, "/etc/hostname", 0).ret -- openat
---local rd = vm:syscall(0, { args = { fd, 0, 64 }, bufs = { ("\0"):rep(64) }, ptrs = { 1 } })
---assert(rd.ret > 0 and rd.out_bufs[1]:sub(1, rd.ret) == vm:read_file("/etc/hostname"))
---vm:syscall(3, fd) -- close
---```
---@param nr integer
---@param ... integer|string|provium.SyscallOptions
---@return provium.SyscallResult
function GuestOps:syscall(nr, ...) end

---Records operations with `fn(b)` and runs them in one round trip; a failure
---does not stop the rest.
---```lua
---local res = vm:batch(function(b)
---  b:write_file("/tmp/doc-batch", "x")
---  b:stat("/tmp/doc-batch")
---  b:read_file("/nope")
---end)
---assert(res[2].ok.size == 1 and res[3].err.code == "ENOENT")
---```
---@param fn fun(b: provium.Batch)
---@return provium.BatchRow[]
function GuestOps:batch(fn) end

---A VM. Closed by `close()`, by `<close>`, or by the garbage collector.
---@class provium.Vm: provium.GuestOps
local Vm = {}

---The VM's name.
---@return string
function Vm:name() end

---The VM's profile name.
---@return string
function Vm:profile() end

---The VM's state.
---@return provium.VmState
function Vm:state() end

---Boots the VM; returns it once the agent answered.
---```lua
---local other <close> = provium.vm("doc-boot", "default")
---other:boot({ kernel_cmdline_append = "loglevel=7" })
---assert(other:state() == "booted")
---```
---@param opts? provium.BootOptions
---@return provium.Vm
function Vm:boot(opts) end

---Ends the VM: QEMU is stopped at once and its resources released
---(idempotent). The guest has no disks, so nothing is lost by not
---powering it off first.
function Vm:shutdown() end

---Same as `shutdown`; also the `<close>` and garbage-collection hook.
function Vm:close() end

---Stops the guest's vCPUs (idempotent); guest calls raise until `resume`.
---@return provium.Vm
function Vm:pause() end

---Lets a paused guest run again (idempotent).
---@return provium.Vm
function Vm:resume() end

---Writes a snapshot of the VM (booted or paused; it carries on as it was).
---Refuses while Files or Tails of the VM are open, naming them.
---```lua
---vm:write_file("/tmp/doc-state", "before")
---local snap = vm:snapshot()
---vm:write_file("/tmp/doc-state", "after")
---vm:restore(snap)
---assert(vm:read_file("/tmp/doc-state") == "before")
---snap:delete()
---```
---@param path? string A directory to create (kept until `snap:delete()`); without one the snapshot is removed when collected.
---@return provium.Snapshot
function Vm:snapshot(path) end

---Starts this VM from a snapshot (a Snapshot or its directory) and returns it
---once the agent answered. A booted VM is rolled back: Files, Tails, Processes
---and Workers of the machine it replaces raise.
---@param snap provium.Snapshot|string
---@param opts? provium.RestoreOptions
---@return provium.Vm
function Vm:restore(snap, opts) end

---The serial console.
---@return provium.Console
function Vm:console() end

---Starts a worker: a separate agent process with its own credentials and
---namespaces, offering the guest operations.
---```lua
---local w <close> = vm:spawn_worker({ uid = 1000, gid = 1000 })
---assert(w:run("id -u").stdout == "1000\n")
---assert(not pcall(w.write_file, w, "/etc/doc-denied", "x"))
---```
---@param opts? provium.WorkerOptions
---@return provium.Worker
function Vm:spawn_worker(opts) end

---A worker (`vm:spawn_worker`).
---@class provium.Worker: provium.GuestOps
local Worker = {}

---Sends a signal to the worker (default SIGTERM).
---@param sig? integer|string
function Worker:kill(sig) end

---Waits for the worker to end; returns its exit status.
---@return integer
function Worker:join() end

---The agent's handle id of the worker (for messages and debugging).
---@return integer
function Worker:handle() end

---Ends the worker (idempotent).
function Worker:close() end

---Options of `vm:spawn_worker`.
---@class provium.WorkerOptions
---@field uid? integer
---@field gid? integer
---@field groups? integer[] Supplementary groups.
---@field cwd? string
---@field unshare? ("mount"|"net"|"pid"|"ipc"|"uts")[] New namespaces.

---Options of `write_file`.
---@class provium.WriteOptions
---@field perm? provium.Mode Exactly this mode (no umask).
---@field uid? integer Owner.
---@field gid? integer Group.

---Options of `push_file`.
---@class provium.PushOptions
---@field perm? provium.Mode Instead of the host file's mode.
---@field uid? integer
---@field gid? integer
---@field auto_dep? boolean false: the fixture scanner does not count the file as a dependency.

---Options of `run` and `run_async`.
---@class provium.RunOptions
---@field args? string[]
---@field env? table<string, string> Added to (or, with `env_clear`, instead of) the agent's environment.
---@field env_clear? boolean
---@field cwd? string
---@field stdin? string Any size (it streams).
---@field timeout? provium.Duration|false `run` only: default the VM's `run_timeout` (600 s); false: none.
---@field max_output? provium.Size|false `run` only: stdout and stderr together (default "64M"); past it the process group is killed and the call raises EFBIG.

---How `open_file` opens. At least one of `read`, `write`, `append`.
---@class provium.OpenMode
---@field read? boolean
---@field write? boolean
---@field append? boolean
---@field create? boolean
---@field truncate? boolean
---@field exclusive? boolean
---@field perm? provium.Mode Mode of a created file (default 0644, umask applies).

---@class provium.Stat
---@field size integer
---@field mtime number Seconds, fractional.
---@field mtime_ns integer
---@field atime number
---@field atime_ns integer
---@field ctime number
---@field ctime_ns integer
---@field perm integer Permission bits (`mode & 0o7777`).
---@field mode integer Full `st_mode`.
---@field entry_type provium.EntryType
---@field uid integer
---@field gid integer
---@field ino integer
---@field nlink integer
---@field dev integer
---@field rdev integer
---@field blocks integer
---@field blksize integer

---@class provium.DirEntry
---@field name string
---@field entry_type provium.EntryType

---The table form of `syscall`'s arguments.
---@class provium.SyscallOptions
---@field args? integer[] Up to 6 arguments; slot i is `args[i+1]`.
---@field bufs? string[] Buffers passed by address (returned after the call in `out_bufs`).
---@field ptrs? integer[] `ptrs[i]`: the 0-based argument slot that gets the address of `bufs[i]`.
---@field nested? table `{parent=, child=, offset=}` entries (1-based buffer indices): the 8-byte address of `bufs[child]` is written into `bufs[parent]` at `offset` first.

---@class provium.SyscallResult
---@field ret integer
---@field errno integer 0 on success.
---@field out_bufs string[]

---@class provium.IoctlResult
---@field ret integer
---@field out_data string
---@field out_bufs string[]

---A row of a batch result: `ok` holds the value, `err` the error.
---@class provium.BatchRow
---@field ok? any
---@field err? provium.GuestError|string

---The recorder a batch function gets: each call records an operation and
---returns its index in the results.
---@class provium.Batch
local Batch = {}

---@param path string
---@param opts? { max_size?: provium.Size|false }
---@return integer
function Batch:read_file(path, opts) end

---@param path string
---@param data string
---@param opts? provium.WriteOptions
---@return integer
function Batch:write_file(path, data, opts) end

---@param path string
---@param opts? { follow?: boolean }
---@return integer
function Batch:stat(path, opts) end

---@param path string
---@return integer
function Batch:listdir(path) end

---@param path string
---@param opts? { parents?: boolean, perm?: provium.Mode }|boolean
---@return integer
function Batch:mkdir(path, opts) end

---@param path string
---@return integer
function Batch:unlink(path) end

---@param from string
---@param to string
---@return integer
function Batch:rename(from, to) end

---@param path string
---@param mode provium.Mode
---@return integer
function Batch:chmod(path, mode) end

---@param target string
---@param path string
---@return integer
function Batch:symlink(target, path) end

---@param cmd string
---@param args_or_opts? string[]|provium.RunOptions
---@return integer
function Batch:run(cmd, args_or_opts) end

---@param nr integer
---@param ... integer|string|provium.SyscallOptions
---@return integer
function Batch:syscall(nr, ...) end

---What `run` and `proc:wait` return: a plain table with methods.
---@class provium.RunResult
---@field exit_code integer The exit code; -1 when signalled, -2 when timed out.
---@field stdout string
---@field stderr string
---@field status "exited"|"signalled"|"timed_out"
---@field signal? integer The signal that ended the process.
---@field timed_out boolean
---@field command string The command line, for messages.
local RunResult = {}

---Whether the process exited with status 0.
---@return boolean
function RunResult:ok() end

---How the process ended: "exited with code 1", "killed by signal 9", "timed out".
---@return string
function RunResult:describe() end

---A multi-line report: the command, how it ended, stdout and stderr verbatim.
---@param msg? string A prefix.
---@return string
function RunResult:report(msg) end

---Raises `report(msg)` at the caller's line unless `ok()`; returns the result.
---```lua
---vm:run("true"):assert_ok()
---local ok, err = pcall(function() vm:run("echo no; exit 1"):assert_ok("step 1") end)
---assert(not ok and err:find("step 1: command echo no; exit 1 exited with code 1", 1, true))
---```
---@param msg? string
---@return provium.RunResult
function RunResult:assert_ok(msg) end

---A file open in the guest (`open_file`).
---@class provium.File
local File = {}

---One read of at most `n` bytes; "" at end of file.
---@param n integer
---@return string
function File:read(n) end

---Reads from the cursor to the end.
---@return string
function File:read_all() end

---One write; returns the bytes written.
---@param data string
---@return integer
function File:write(data) end

---Moves the cursor; returns the new offset.
---@param offset integer
---@param whence? "set"|"cur"|"end"
---@return integer
function File:seek(offset, whence) end

---The cursor's offset.
---@return integer
function File:tell() end

---The agent's handle id (0 once closed).
---@return integer
function File:fd() end

---A Tail following this file from its cursor.
---@return provium.Tail
function File:tail_stream() end

---Closes the file (idempotent).
function File:close() end

---A stream of bytes from the guest: a followed file, a process's output, the
---console. Timeouts default to 10 s (`drain`: 0.5 s); patterns are plain text.
---@class provium.Tail
local Tail = {}

---The next bytes; nil when nothing came within `timeout` or the source ended
---(see `eof()`).
---@param timeout? provium.Duration
---@return string?
function Tail:next(timeout) end

---Reads up to and including `delim`; raises when it does not come within
---`timeout`, naming what was seen.
---@param delim string
---@param timeout? provium.Duration
---@return string
function Tail:read_until(delim, timeout) end

---Waits until `text` appears; returns it.
---@param text string
---@param timeout? provium.Duration
---@return string
function Tail:expect(text, timeout) end

---Everything that arrives within `timeout` (default 0.5 s), as chunks.
---@param timeout? provium.Duration
---@return string[]
function Tail:drain(timeout) end

---Whether the source ended.
---@return boolean
function Tail:eof() end

---Stops following (idempotent).
function Tail:close() end

---A process started by `run_async`.
---@class provium.Process
local Process = {}

---Waits for the process. Default deadline: the VM's `run_timeout` (600 s;
---false: none); then the process group is killed and the result has `timed_out`.
---@param timeout? provium.Duration|false
---@return provium.RunResult
function Process:wait(timeout) end

---Sends `sig` (a number or a name such as "TERM" or "SIGKILL"; default
---SIGTERM) to the process's group: the command and what it started, like
---a timeout or Ctrl-C in a terminal (`run_async("sleep 9")` runs `sh -c`,
---which forks `sleep`).
---@param sig? integer|string
function Process:kill(sig) end

---Sends `sig` to the process alone, not its group (no default).
---@param sig integer|string
function Process:signal(sig) end

---The guest pid.
---@return integer
function Process:pid() end

---The agent's handle id (for messages and debugging).
---@return integer
function Process:handle() end

---"running" or "exited".
---@return "running"|"exited"
function Process:status() end

---Writes to the process's stdin; returns the bytes written.
---@param data string
---@return integer
function Process:stdin_write(data) end

---Closes the process's stdin.
function Process:close_stdin() end

---A Tail of the process's stdout.
---@return provium.Tail
function Process:stdout_stream() end

---A Tail of the process's stderr.
---@return provium.Tail
function Process:stderr_stream() end

---Ends the process if nobody waited for it, and releases it (idempotent).
function Process:close() end

---A snapshot (`vm:snapshot()`).
---@class provium.Snapshot
local Snapshot = {}

---Bytes on disk.
---@return integer
function Snapshot:size() end

---Its directory.
---@return string
function Snapshot:path() end

---Removes its files (idempotent).
function Snapshot:delete() end

---The serial console of a VM (`vm:console()`).
---@class provium.Console
local Console = {}

---The whole log kept so far (the last 4 MiB).
---@return string
function Console:read_log() end

---Waits until `text` appears on the console; returns it.
---@param text string
---@param timeout? provium.Duration Default 30 s.
---@return string
function Console:expect(text, timeout) end

---A Tail over the live console, from now on.
---@return provium.Tail
function Console:read() end

---The last `n` lines (default 30), without lines that are noise of the
---virtual machine every guest shares. After boot the guest's kernel prints
---every message but debug ones to the console.
---```lua
---vm:run("echo doc-marker > /dev/kmsg")
---vm:console():expect("doc-marker")
---assert(vm:console():tail(5):find("doc-marker", 1, true))
---```
---@param n? integer
---@return string
function Console:tail(n) end

---Raised for guest OS failures; `tostring(err)` reads
---`vm:read_file("/nope"): ENOENT: No such file or directory`, and string
---methods work on it.
---```lua
---local ok, err = pcall(vm.read_file, vm, "/nope")
---assert(not ok and err.code == "ENOENT" and err.errno == 2)
---assert(err:match("ENOENT"))
---```
---@class provium.GuestError
---@field op string The call, e.g. "vm:read_file".
---@field call string The call with its arguments.
---@field path? string
---@field errno integer
---@field code string e.g. "ENOENT".
---@field message string e.g. "No such file or directory".
---@field where string `file:line` of the call.

return provium
