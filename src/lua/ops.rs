//! Guest operations: Lua arguments in, one agent round trip, Lua values out.
//! Shared by everything that fronts an agent (VMs and workers).
//!
//! Each operation is split in two: [`build`] turns Lua arguments into a
//! [`Request`] (validating them), [`convert`] turns the agent's answer into
//! Lua values. Batches reuse both for every recorded call.

use std::time::{Duration, Instant};

use mlua::{ffi, IntoLua, IntoLuaMulti, Lua, MultiValue, Table, Value};
use provium_protocol::{
    Failure, FileAttrs, Nested, Op, Reply, RunOutcome, RunSpec, StatInfo, SyscallSpec, CHUNK_LEN,
};
use serde_bytes::ByteBuf;

use super::args;
use super::errors::{guest_failure, ApiError, ApiResult};
use super::target::Target;
use crate::transport::client::PendingCall;
use crate::transport::Completed;
use crate::vm::console::Console;

/// A Lua string literal for messages: `"/etc/x"`.
pub fn quote(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// Argument `i` (nil when absent).
pub fn arg(rest: &[Value], i: usize) -> &Value {
    rest.get(i).unwrap_or(&Value::Nil)
}

/// How a reply becomes Lua values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing.
    Unit,
    /// A string (file body).
    Bytes,
    /// A stat table.
    Stat,
    /// A listdir array.
    Entries,
    /// A RunResult table.
    Run,
    /// A syscall result table.
    Syscall,
}

/// A validated operation.
pub struct Request {
    pub op: Op,
    pub kind: Kind,
    /// The call name, e.g. `vm:read_file`.
    pub name: String,
    /// The call with its arguments, for error objects; when `None`, the
    /// name and the quoted path (built only when a call fails: a batch of
    /// 1,000 stats would otherwise format 1,000 strings nobody reads).
    pub shown: Option<String>,
    /// The path for error objects.
    pub path: Option<Vec<u8>>,
    /// `read_file`: the most bytes the host accepts (`None`: no cap).
    pub limit: Option<u64>,
    /// `run`: the command line, for the RunResult's `command`.
    pub command: Option<String>,
}

/// Default cap of `read_file` (`opts.max_size`): a runaway read (a device,
/// a file that keeps growing) fails instead of exhausting host memory.
pub const DEFAULT_READ_CAP: u64 = 2 << 30;

impl Request {
    fn new(name: &str, op: Op, kind: Kind, path: Option<Vec<u8>>) -> Request {
        Request {
            op,
            kind,
            name: name.to_string(),
            shown: None,
            path,
            limit: None,
            command: None,
        }
    }

    /// The error for a failed reply.
    pub fn failure(&self, f: Failure) -> ApiError {
        let shown = match (&self.shown, &self.path) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => format!("{}({})", self.name, quote(p)),
            (None, None) => format!("{}()", self.name),
        };
        guest_failure(&self.name, shown, self.path.as_deref(), f)
    }
}

/// Builds operation `op` from Lua arguments (the batchable operations).
pub fn build(t: &Target, op: &str, rest: &[Value]) -> ApiResult<Request> {
    let name = format!("{}:{op}", t.prefix);
    let call = name.as_str();
    Ok(match op {
        "read_file" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let mut limit = Some(DEFAULT_READ_CAP);
            if let Some(o) = args::opt_table(call, "opts", arg(rest, 1))? {
                args::check_keys(call, "opts", &o, &["max_size"])?;
                match o.raw_get::<Value>("max_size")? {
                    Value::Nil => {}
                    Value::Boolean(false) => limit = None,
                    v => limit = Some(args::size(call, "opts.max_size", &v)?),
                }
            }
            let mut req = Request::new(
                call,
                Op::ReadFile { path: path.clone() },
                Kind::Bytes,
                Some(path),
            );
            req.limit = limit;
            req
        }
        "write_file" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let data = args::bytes(call, "data", arg(rest, 1))?;
            let op = Op::WriteFile {
                path: path.clone(),
                attrs: file_attrs(call, arg(rest, 2))?,
                data: ByteBuf::from(data),
                more: false,
            };
            Request::new(call, op, Kind::Unit, Some(path))
        }
        "stat" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let mut follow = true;
            if let Some(o) = args::opt_table(call, "opts", arg(rest, 1))? {
                args::check_keys(call, "opts", &o, &["follow"])?;
                if !o.raw_get::<Value>("follow")?.is_nil() {
                    follow = args::field_bool(call, &o, "follow", "opts")?;
                }
            }
            let op = Op::Stat {
                path: path.clone(),
                follow,
            };
            Request::new(call, op, Kind::Stat, Some(path))
        }
        "listdir" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            Request::new(
                call,
                Op::ListDir { path: path.clone() },
                Kind::Entries,
                Some(path),
            )
        }
        "mkdir" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let mut parents = false;
            let mut perm = None;
            if let Some(o) = args::opt_table(call, "opts", arg(rest, 1))? {
                args::check_keys(call, "opts", &o, &["parents", "perm"])?;
                parents = args::field_bool(call, &o, "parents", "opts")?;
                perm = args::field_mode(call, &o, "perm", "opts")?;
            }
            let op = Op::Mkdir {
                path: path.clone(),
                parents,
                perm,
            };
            Request::new(call, op, Kind::Unit, Some(path))
        }
        "unlink" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            Request::new(
                call,
                Op::Unlink { path: path.clone() },
                Kind::Unit,
                Some(path),
            )
        }
        "rename" => {
            let from = args::path(call, "from", arg(rest, 0))?;
            let to = args::path(call, "to", arg(rest, 1))?;
            let mut r = Request::new(
                call,
                Op::Rename {
                    from: from.clone(),
                    to: to.clone(),
                },
                Kind::Unit,
                Some(from.clone()),
            );
            r.shown = Some(format!("{call}({}, {})", quote(&from), quote(&to)));
            r
        }
        "chmod" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let mode = args::mode(call, "mode", arg(rest, 1))?;
            let op = Op::Chmod {
                path: path.clone(),
                mode,
            };
            Request::new(call, op, Kind::Unit, Some(path))
        }
        "run" => {
            let spec = run_spec(call, arg(rest, 0), arg(rest, 1), rest.len(), t.run_timeout)?;
            let program = spec.program.clone();
            let command = command_line(&spec);
            let mut r = Request::new(call, Op::Run(spec), Kind::Run, Some(program));
            r.command = Some(command);
            r
        }
        "syscall" => Request::new(
            call,
            Op::Syscall(syscall_spec(call, rest)?),
            Kind::Syscall,
            None,
        ),
        "ping" => Request::new(call, Op::Ping, Kind::Unit, None),
        other => {
            return Err(ApiError::msg(format!(
                "{}: unknown operation {other:?}",
                t.prefix
            )))
        }
    })
}

/// Turns one reply into Lua values (or the error to raise).
pub fn convert(
    lua: &Lua,
    req: &Request,
    result: Result<Reply, Failure>,
    channels: [Vec<u8>; 3],
) -> ApiResult<MultiValue> {
    let reply = result.map_err(|f| req.failure(f))?;
    let unexpected = || ApiError::msg(format!("{}: the agent sent an unexpected reply", req.name));
    let [mut body, mut out, mut err] = channels;
    Ok(match (req.kind, reply) {
        (Kind::Unit, _) => MultiValue::new(),
        (Kind::Bytes, Reply::Bytes(tail)) => {
            if body.is_empty() {
                lua.create_string(&tail)?.into_lua_multi(lua)?
            } else {
                body.extend_from_slice(&tail);
                lua.create_string(&body)?.into_lua_multi(lua)?
            }
        }
        (Kind::Stat, Reply::Stat(st)) => stat_table(lua, &st)?.into_lua_multi(lua)?,
        (Kind::Entries, Reply::Entries(tail)) => {
            // A large listing came ahead in `Data` chunks.
            let mut entries = provium_protocol::DirEntry::decode_run(&body).map_err(|e| {
                ApiError::msg(format!("{}: bad listing from the agent: {e}", req.name))
            })?;
            entries.extend(tail);
            let list = lua.create_table_with_capacity(entries.len(), 0)?;
            for e in entries {
                let row = lua.create_table_with_capacity(0, 2)?;
                row.raw_set("name", lua.create_string(&e.name)?)?;
                row.raw_set("entry_type", e.entry_type.as_str())?;
                list.raw_push(row)?;
            }
            list.into_lua_multi(lua)?
        }
        (Kind::Run, Reply::Run(o)) => {
            run_result(lua, o, &mut out, &mut err, req.command.as_deref())?.into_lua_multi(lua)?
        }
        (Kind::Syscall, Reply::Syscall { ret, errno, bufs }) => {
            syscall_table(lua, ret, errno, bufs)?.into_lua_multi(lua)?
        }
        _ => return Err(unexpected()),
    })
}

/// Runs a batchable operation: one round trip.
pub fn run_one(lua: &Lua, t: &Target, req: Request) -> ApiResult<MultiValue> {
    let done = t.roundtrip(&req.name, req.op.clone())?;
    let Completed { result, channels } = done;
    convert(lua, &req, result, channels)
}

/// Runs operation `op` with Lua arguments `rest`.
pub fn dispatch(lua: &Lua, t: &Target, op: &str, rest: &[Value]) -> ApiResult<MultiValue> {
    if op == "write_file" {
        // Large data streams in chunks instead of one huge frame.
        let call = format!("{}:write_file", t.prefix);
        let path = args::path(&call, "path", arg(rest, 0))?;
        let data = match arg(rest, 1) {
            Value::String(s) => s.clone(),
            other => {
                return Err(ApiError::msg(format!(
                    "{call}: data must be a string (got {})",
                    args::show(other)
                )))
            }
        };
        let attrs = file_attrs(&call, arg(rest, 2))?;
        write_file(t, &call, path, attrs, &data.as_bytes())?;
        return Ok(MultiValue::new());
    }
    if op == "batch" {
        return batch(lua, t, arg(rest, 0));
    }
    let mut req = build(t, op, rest)?;
    if req.kind == Kind::Bytes {
        return super::readinto::read_file(lua, t, req);
    }
    if let Op::Run(spec) = &mut req.op {
        if spec.stdin.len() > CHUNK_LEN {
            // Large stdin streams after the call, as write_file's data.
            let more = spec.stdin.split_off(CHUNK_LEN);
            spec.stdin_more = true;
            return run_with_upload(lua, t, req, &more);
        }
    }
    run_one(lua, t, req)
}

/// Runs `req`, then sends `upload` as the call's `Data` (a process's stdin
/// beyond the first chunk).
fn run_with_upload(lua: &Lua, t: &Target, req: Request, upload: &[u8]) -> ApiResult<MultiValue> {
    let pending = t.call(&req.name, req.op.clone())?;
    send_upload(t, &req.name, &pending, upload)?;
    let Completed { result, channels } =
        t.client.wait(pending).map_err(|e| t.infra(&req.name, e))?;
    convert(lua, &req, result, channels)
}

/// Runs recorded calls (`{{name, args..., n=}, ...}`, `n` counting the name)
/// in one round trip; returns
/// `{ {ok=value} | {err=error}, ... }` in order.
fn batch(lua: &Lua, t: &Target, list: &Value) -> ApiResult<MultiValue> {
    let call = format!("{}:batch", t.prefix);
    let Value::Table(list) = list else {
        return Err(ApiError::msg(format!(
            "{call}: internal: recorded calls missing"
        )));
    };
    let mut reqs = Vec::new();
    for entry in list.clone().sequence_values::<Table>() {
        let entry = entry?;
        let name: String = entry.raw_get(1)?;
        let n: usize = entry.raw_get("n")?;
        let rest: Vec<Value> = (2..=n)
            .map(|i| entry.raw_get::<Value>(i))
            .collect::<mlua::Result<_>>()?;
        reqs.push(build(t, &name, &rest)?);
    }
    let out = lua.create_table_with_capacity(reqs.len(), 0)?;
    if reqs.is_empty() {
        return Ok(out.into_lua_multi(lua)?);
    }
    // The ops are not needed after sending: move them out instead of cloning.
    let ops = reqs
        .iter_mut()
        .map(|r| std::mem::replace(&mut r.op, Op::Ping))
        .collect();
    let done = t.roundtrip(&call, Op::Batch(ops))?;
    let results = match done.result {
        Ok(Reply::Batch(results)) if results.len() == reqs.len() => results,
        Ok(_) => {
            return Err(ApiError::msg(format!(
                "{call}: the agent sent an unexpected reply"
            )))
        }
        Err(f) => return Err(guest_failure(&call, format!("{call}()"), None, f)),
    };
    for (i, (req, result)) in reqs.iter().zip(results).enumerate() {
        if let (Kind::Stat, Ok(Reply::Stat(st))) = (req.kind, &result) {
            set_stat_row(lua, &out, i + 1, st)?;
            continue;
        }
        let row = lua.create_table_with_capacity(0, 1)?;
        match convert(lua, req, result, Default::default()) {
            Ok(values) => {
                if let Some(v) = values.into_iter().next() {
                    row.raw_set("ok", v)?;
                }
            }
            Err(e) => row.raw_set("err", e.into_lua(lua)?)?,
        }
        out.raw_set(i + 1, row)?;
    }
    Ok(out.into_lua_multi(lua)?)
}

/// write_file's options: `{perm=, uid=, gid=}`.
fn file_attrs(call: &str, opts: &Value) -> ApiResult<FileAttrs> {
    let Some(o) = args::opt_table(call, "opts", opts)? else {
        return Ok(FileAttrs::default());
    };
    args::check_keys(call, "opts", &o, &["perm", "uid", "gid"])?;
    let id = |key| -> ApiResult<Option<u32>> {
        Ok(args::field_int(call, &o, key, "opts", 0, i64::from(u32::MAX - 1))?.map(|v| v as u32))
    };
    Ok(FileAttrs {
        perm: args::field_mode(call, &o, "perm", "opts")?,
        uid: id("uid")?,
        gid: id("gid")?,
    })
}

fn write_file(
    t: &Target,
    call: &str,
    path: Vec<u8>,
    attrs: FileAttrs,
    data: &[u8],
) -> ApiResult<()> {
    let (first, rest) = data.split_at(data.len().min(CHUNK_LEN));
    let more = !rest.is_empty();
    let pending = t.call(
        call,
        Op::WriteFile {
            path: path.clone(),
            attrs,
            data: ByteBuf::from(first),
            more,
        },
    )?;
    if more {
        send_upload(t, call, &pending, rest)?;
    }
    let done = t.client.wait(pending).map_err(|e| t.infra(call, e))?;
    done.result
        .map(drop)
        .map_err(|f| Request::new(call, Op::Ping, Kind::Unit, Some(path)).failure(f))
}

/// Sends `data` as the `Data` of call `pending`, in chunks, the last one
/// marked (write_file's body, run's stdin).
fn send_upload(t: &Target, call: &str, pending: &PendingCall, data: &[u8]) -> ApiResult<()> {
    let mut chunks = data.chunks(CHUNK_LEN).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        t.client
            .send_data(pending.id, chunk, last)
            .map_err(|e| t.infra(call, e))?;
    }
    Ok(())
}

/// The stat table of `st`.
pub fn stat_table(lua: &Lua, st: &StatInfo) -> mlua::Result<Table> {
    // SAFETY: the closure only pushes numbers and static strings into the
    // table it creates (see `push_stat`).
    unsafe { lua.exec_raw((), |state| push_stat(state, st)) }
}

/// Sets `list[i] = {ok = stat table of st}` (a batch row).
pub fn set_stat_row(lua: &Lua, list: &Table, i: usize, st: &StatInfo) -> mlua::Result<()> {
    let i = ffi::lua_Integer::try_from(i).map_err(mlua::Error::external)?;
    // SAFETY: `list` is argument 1 of the protected call; the closure pushes
    // two fresh tables (see `push_stat`) and stores them, leaving the stack
    // as it found it.
    unsafe {
        lua.exec_raw::<()>(list, |state| {
            ffi::lua_createtable(state, 0, 1);
            push_stat(state, st);
            ffi::lua_setfield(state, -2, c"ok".as_ptr());
            ffi::lua_rawseti(state, 1, i);
            ffi::lua_pop(state, 1);
        })
    }
}

/// Pushes the stat table of `st` with the raw C API.
///
/// Measured reason for not using mlua's `Table::raw_set` here: in a module
/// each `raw_set` is a protected call of its own; for a batch of 1,000 stats
/// (18 fields each) that was ~5 ms of the host's ~11 ms of CPU per batch
/// (`perf`, bench/batch.lua). One protected call per table (`exec_raw`)
/// does the same work.
///
/// # Safety
/// `state` must be inside a protected call with 3 free stack slots. Only
/// numbers and static strings are pushed; nothing here needs dropping if a
/// memory error unwinds the call.
unsafe fn push_stat(state: *mut ffi::lua_State, st: &StatInfo) {
    use std::ffi::CStr;
    let int = |key: &CStr, v: i64| {
        ffi::lua_pushinteger(state, v);
        ffi::lua_setfield(state, -2, key.as_ptr());
    };
    let num = |key: &CStr, v: f64| {
        ffi::lua_pushnumber(state, v);
        ffi::lua_setfield(state, -2, key.as_ptr());
    };
    // As mlua converts a u64: an integer when it fits, else a float.
    let uint = |key: &CStr, v: u64| match i64::try_from(v) {
        Ok(v) => int(key, v),
        Err(_) => num(key, v as f64),
    };
    let secs = |ns: i64| ns as f64 / 1e9;
    ffi::lua_createtable(state, 0, 18);
    uint(c"size", st.size);
    num(c"mtime", secs(st.mtime_ns));
    int(c"mtime_ns", st.mtime_ns);
    num(c"atime", secs(st.atime_ns));
    int(c"atime_ns", st.atime_ns);
    num(c"ctime", secs(st.ctime_ns));
    int(c"ctime_ns", st.ctime_ns);
    int(c"perm", i64::from(st.perm()));
    int(c"mode", i64::from(st.mode));
    let kind = st.entry_type().as_str();
    ffi::lua_pushlstring(state, kind.as_ptr().cast(), kind.len());
    ffi::lua_setfield(state, -2, c"entry_type".as_ptr());
    int(c"uid", i64::from(st.uid));
    int(c"gid", i64::from(st.gid));
    uint(c"ino", st.ino);
    uint(c"nlink", st.nlink);
    uint(c"dev", st.dev);
    uint(c"rdev", st.rdev);
    uint(c"blocks", st.blocks);
    uint(c"blksize", st.blksize);
}

const RUN_OPTION_KEYS: &[&str] = &[
    "args",
    "env",
    "env_clear",
    "cwd",
    "stdin",
    "timeout",
    "timeout_ms",
    "max_output",
];

/// Default cap of `run`'s output (stdout and stderr together,
/// `opts.max_output`): an endless writer is killed instead of filling host
/// memory.
pub const DEFAULT_RUN_OUTPUT_CAP: u64 = 64 << 20;

/// Default deadline of `run` and `proc:wait` (`timeout = false`: none): a
/// hung command fails its test instead of hanging the suite.
pub const DEFAULT_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Decodes the argument forms of `run`:
/// `run("cmd")` (sh -c), `run("prog", {"a", "b"})` (direct exec),
/// `run("prog", {args=, env=, env_clear=, cwd=, stdin=, timeout=})` (direct
/// exec with `args`, else `sh -c "prog"`).
/// The RunSpec of `run`/`run_async` arguments; `run_timeout` is the
/// deadline of a `run` that names none.
pub fn run_spec(
    call: &str,
    cmd: &Value,
    second: &Value,
    nargs: usize,
    run_timeout: Option<std::time::Duration>,
) -> ApiResult<RunSpec> {
    let mut spec = run_spec_forms(call, cmd, second, nargs)?;
    // `run` returns all output at once: capped. A Process keeps its output
    // in the guest and streams it.
    let is_run = call.ends_with(":run");
    let cap: Value = match second {
        Value::Table(t) => t.raw_get("max_output")?,
        _ => Value::Nil,
    };
    let timed = match second {
        Value::Table(t) => {
            !t.raw_get::<Value>("timeout")?.is_nil() || !t.raw_get::<Value>("timeout_ms")?.is_nil()
        }
        _ => false,
    };
    if is_run && !timed {
        spec.timeout_ms = run_timeout.map(|d| d.as_millis().max(1) as u64);
    }
    spec.max_output = match (&cap, is_run) {
        (Value::Nil, true) => Some(DEFAULT_RUN_OUTPUT_CAP),
        (Value::Nil, false) => None,
        (_, false) => {
            return Err(ApiError::msg(format!(
                "{call}: opts.max_output applies to run only (a Process streams its output)"
            )))
        }
        (Value::Boolean(false), true) => None,
        (v, true) => Some(args::size(call, "opts.max_output", v)?),
    };
    Ok(spec)
}

fn run_spec_forms(call: &str, cmd: &Value, second: &Value, nargs: usize) -> ApiResult<RunSpec> {
    if nargs == 0 {
        return Err(ApiError::msg(format!("{call}: expected a command string")));
    }
    let cmd = match cmd {
        Value::String(s) => s.as_bytes().to_vec(),
        other => {
            return Err(ApiError::msg(format!(
                "{call}: command must be a string (got {})",
                args::show(other)
            )))
        }
    };
    if cmd.contains(&0) {
        return Err(ApiError::msg(format!(
            "{call}: command must not contain NUL bytes"
        )));
    }
    let shell = |cmd: Vec<u8>| RunSpec {
        program: b"sh".to_vec(),
        args: vec![ByteBuf::from(b"-c".to_vec()), ByteBuf::from(cmd)],
        ..RunSpec::default()
    };
    let t = match second {
        Value::Nil => return Ok(shell(cmd)),
        Value::Table(t) => t,
        other => {
            return Err(ApiError::msg(format!(
                "{call}: second argument must be a table of arguments or options (got {})",
                args::show(other)
            )))
        }
    };
    // Any named key makes it an options table (so a misspelt option raises
    // instead of turning the table into an argument list); arguments then
    // go in `args`.
    let mut named = false;
    let mut positional = false;
    for pair in t.clone().pairs::<Value, Value>() {
        match pair?.0 {
            Value::Integer(_) | Value::Number(_) => positional = true,
            _ => named = true,
        }
    }
    if named && positional {
        for pair in t.clone().pairs::<Value, Value>() {
            let (k, _) = pair?;
            if let Value::String(s) = &k {
                if !RUN_OPTION_KEYS.iter().any(|n| s.as_bytes() == n.as_bytes()) {
                    return Err(args::unknown_option(call, "opts", &k, RUN_OPTION_KEYS));
                }
            }
        }
        return Err(ApiError::msg(format!(
            "{call}: the table mixes arguments with options: put the arguments in opts.args"
        )));
    }
    if !named {
        let list = string_list(call, "args", t)?;
        return Ok(RunSpec {
            program: cmd,
            args: list,
            ..RunSpec::default()
        });
    }
    args::check_keys(call, "opts", t, RUN_OPTION_KEYS)?;
    let mut spec = match t.raw_get::<Value>("args")? {
        Value::Nil => shell(cmd),
        Value::Table(a) => RunSpec {
            program: cmd,
            args: string_list(call, "opts.args", &a)?,
            ..RunSpec::default()
        },
        other => {
            return Err(ApiError::msg(format!(
                "{call}: opts.args must be an array of strings (got {})",
                args::show(&other)
            )))
        }
    };
    match t.raw_get::<Value>("env")? {
        Value::Nil => {}
        Value::Table(env) => {
            let mut pairs = Vec::new();
            for pair in env.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let key = match &k {
                    Value::String(s)
                        if !s.as_bytes().is_empty() && !s.as_bytes().contains(&b'=') =>
                    {
                        s.as_bytes().to_vec()
                    }
                    _ => {
                        return Err(ApiError::msg(format!(
                            "{call}: opts.env keys must be non-empty strings without '=' (got {})",
                            args::show(&k)
                        )))
                    }
                };
                let val = match &v {
                    Value::String(s) => s.as_bytes().to_vec(),
                    Value::Integer(i) => i.to_string().into_bytes(),
                    Value::Number(n) => n.to_string().into_bytes(),
                    _ => {
                        return Err(ApiError::msg(format!(
                            "{call}: opts.env[{}] must be a string (got {})",
                            args::show(&k),
                            args::show(&v)
                        )))
                    }
                };
                if key.contains(&0) || val.contains(&0) {
                    return Err(ApiError::msg(format!(
                        "{call}: opts.env must not contain NUL bytes"
                    )));
                }
                pairs.push((ByteBuf::from(key), ByteBuf::from(val)));
            }
            pairs.sort();
            spec.env = pairs;
        }
        other => {
            return Err(ApiError::msg(format!(
                "{call}: opts.env must be a table of strings (got {})",
                args::show(&other)
            )))
        }
    }
    spec.env_clear = args::field_bool(call, t, "env_clear", "opts")?;
    match t.raw_get::<Value>("cwd")? {
        Value::Nil => {}
        v => spec.cwd = Some(ByteBuf::from(args::path(call, "opts.cwd", &v)?)),
    }
    match t.raw_get::<Value>("stdin")? {
        Value::Nil => {}
        v => spec.stdin = ByteBuf::from(args::bytes(call, "opts.stdin", &v)?),
    }
    let timeout: Value = t.raw_get("timeout")?;
    let timeout_ms: Value = t.raw_get("timeout_ms")?;
    if timeout == Value::Boolean(false) {
        // No deadline: waits as long as the command runs.
    } else if !timeout.is_nil() {
        let d = args::duration(call, "opts.timeout", &timeout)?;
        spec.timeout_ms = Some(d.as_millis().max(1) as u64);
    } else if !timeout_ms.is_nil() {
        spec.timeout_ms = Some(
            args::field_int(call, t, "timeout_ms", "opts", 0, i64::MAX)?
                .unwrap_or(0)
                .max(1) as u64,
        );
    }
    Ok(spec)
}

fn string_list(call: &str, name: &str, t: &Table) -> ApiResult<Vec<ByteBuf>> {
    let len = t.raw_len();
    let mut out = Vec::with_capacity(len);
    for i in 1..=len {
        let v: Value = t.raw_get(i)?;
        let b = match &v {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(n) => n.to_string().into_bytes(),
            Value::Number(n) => n.to_string().into_bytes(),
            other => {
                return Err(ApiError::msg(format!(
                    "{call}: {name}[{i}] must be a string (got {})",
                    args::show(other)
                )))
            }
        };
        if b.contains(&0) {
            return Err(ApiError::msg(format!(
                "{call}: {name}[{i}] must not contain NUL bytes"
            )));
        }
        out.push(ByteBuf::from(b));
    }
    Ok(out)
}

/// The command line a RunSpec stands for, for messages: the string of
/// `run("cmd")` as given, else the program and its arguments, each quoted
/// for a shell when it needs it.
pub fn command_line(spec: &RunSpec) -> String {
    if spec.program == b"sh" && spec.args.len() == 2 && spec.args[0].as_slice() == b"-c" {
        return String::from_utf8_lossy(&spec.args[1]).into_owned();
    }
    std::iter::once(spec.program.as_slice())
        .chain(spec.args.iter().map(|a| a.as_slice()))
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(w: &[u8]) -> String {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"_./=:,+-@%".contains(b);
    let text = String::from_utf8_lossy(w);
    if !w.is_empty() && w.iter().all(plain) {
        return text.into_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The fields of a RunResult (the Lua class adds its methods).
fn run_result(
    lua: &Lua,
    o: RunOutcome,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
    command: Option<&str>,
) -> mlua::Result<Table> {
    out.extend_from_slice(&o.stdout);
    err.extend_from_slice(&o.stderr);
    let t = lua.create_table_with_capacity(0, 7)?;
    if let Some(c) = command {
        t.raw_set("command", c)?;
    }
    t.raw_set("stdout", lua.create_string(&*out)?)?;
    t.raw_set("stderr", lua.create_string(&*err)?)?;
    match o.status {
        provium_protocol::ExitStatus::Exited(code) => {
            t.raw_set("status", "exited")?;
            t.raw_set("exit_code", code)?;
            t.raw_set("timed_out", false)?;
        }
        provium_protocol::ExitStatus::Signalled(sig) => {
            t.raw_set("status", "signalled")?;
            t.raw_set("exit_code", -1)?;
            t.raw_set("signal", sig)?;
            t.raw_set("timed_out", false)?;
        }
        provium_protocol::ExitStatus::TimedOut => {
            t.raw_set("status", "timed_out")?;
            t.raw_set("exit_code", -2)?;
            t.raw_set("signal", libc::SIGKILL)?;
            t.raw_set("timed_out", true)?;
        }
    }
    Ok(t)
}

/// Waits until `pattern` (a plain substring) appears in the console log.
pub fn console_expect(console: &Console, pattern: &[u8], timeout: Duration) -> ApiResult<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = console.contents();
    let mut pos = console.end_offset();
    loop {
        if pattern.is_empty() || seen.windows(pattern.len()).any(|w| w == pattern) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ApiError::msg(format!(
                "console:expect timed out after {:.1} s waiting for {}",
                timeout.as_secs_f64(),
                quote(pattern)
            )));
        }
        let (more, end, ended) = console.read_from(pos, Some(left));
        // Keep a tail of what was seen so a match across two reads is found.
        let keep = seen.len().saturating_sub(pattern.len());
        seen.drain(..keep);
        seen.extend_from_slice(&more);
        pos = end;
        if ended && more.is_empty() {
            return Err(ApiError::msg(format!(
                "console:expect: the console ended (QEMU exited) before {} appeared",
                quote(pattern)
            )));
        }
    }
}

/// Decodes `syscall(nr, a1, ..., a6)` and `syscall(nr, {args=, bufs=, ptrs=,
/// nested=})`. `ptrs` are 0-based argument slots; `nested` entries
/// `{parent=, child=, offset=}` use 1-based buffer indices (as in the original
/// Provium).
pub fn syscall_spec(call: &str, rest: &[Value]) -> ApiResult<SyscallSpec> {
    if rest.is_empty() {
        return Err(ApiError::msg(format!("{call}(nr, ...): missing nr")));
    }
    let nr = args::integer(arg(rest, 0)).ok_or_else(|| {
        ApiError::msg(format!(
            "{call}: nr must be an integer (got {})",
            args::show(arg(rest, 0))
        ))
    })?;
    let mut spec = SyscallSpec {
        nr,
        ..SyscallSpec::default()
    };
    if let (Value::Table(t), 2) = (arg(rest, 1), rest.len()) {
        args::check_keys(
            call,
            "the table form",
            t,
            &["args", "bufs", "ptrs", "nested"],
        )?;
        if let Some(a) = args::opt_table(call, "args", &t.raw_get::<Value>("args")?)? {
            let n = a.raw_len();
            if n > 6 {
                return Err(ApiError::msg(format!(
                    "{call}: args has {n} entries (at most 6)"
                )));
            }
            for i in 1..=n {
                let v: Value = a.raw_get(i)?;
                spec.args[i - 1] = syscall_word(call, &format!("args[{i}]"), &v)?;
            }
        }
        if let Some(b) = args::opt_table(call, "bufs", &t.raw_get::<Value>("bufs")?)? {
            for i in 1..=b.raw_len() {
                let v: Value = b.raw_get(i)?;
                spec.bufs
                    .push(ByteBuf::from(args::bytes(call, &format!("bufs[{i}]"), &v)?));
            }
        }
        if let Some(p) = args::opt_table(call, "ptrs", &t.raw_get::<Value>("ptrs")?)? {
            for i in 1..=p.raw_len() {
                let v: Value = p.raw_get(i)?;
                match args::integer(&v) {
                    Some(slot) if (0..6).contains(&slot) => spec.ptrs.push(slot as u8),
                    _ => {
                        return Err(ApiError::msg(format!(
                            "{call}: ptrs[{i}] must be an argument slot 0..5 (got {})",
                            args::show(&v)
                        )))
                    }
                }
            }
            if spec.ptrs.len() > spec.bufs.len() {
                return Err(ApiError::msg(format!(
                    "{call}: {} ptrs but only {} bufs",
                    spec.ptrs.len(),
                    spec.bufs.len()
                )));
            }
        }
        if let Some(n) = args::opt_table(call, "nested", &t.raw_get::<Value>("nested")?)? {
            for i in 1..=n.raw_len() {
                let name = format!("nested[{i}]");
                let e = match n.raw_get::<Value>(i)? {
                    Value::Table(e) => e,
                    other => {
                        return Err(ApiError::msg(format!(
                            "{call}: {name} must be a table {{parent=, child=, offset=}} (got {})",
                            args::show(&other)
                        )))
                    }
                };
                args::check_keys(call, &name, &e, &["parent", "child", "offset"])?;
                let nb = spec.bufs.len() as i64;
                let parent = args::field_int(call, &e, "parent", &name, 1, nb.max(1))?;
                let child = args::field_int(call, &e, "child", &name, 1, nb.max(1))?;
                let offset = args::field_int(call, &e, "offset", &name, 0, i64::MAX)?;
                match (parent, child) {
                    (Some(p), Some(c)) if nb > 0 => spec.nested.push(Nested {
                        parent: (p - 1) as u32,
                        child: (c - 1) as u32,
                        offset: offset.unwrap_or(0) as u64,
                    }),
                    _ => {
                        return Err(ApiError::msg(format!(
                            "{call}: {name} needs parent and child buffer indices in 1..{nb}"
                        )))
                    }
                }
            }
        }
        return Ok(spec);
    }
    if rest.len() > 7 {
        return Err(ApiError::msg(format!(
            "{call}: at most 6 arguments after nr (got {})",
            rest.len() - 1
        )));
    }
    for (i, v) in rest.iter().skip(1).enumerate() {
        spec.args[i] = syscall_word(call, &format!("argument #{}", i + 1), v)?;
    }
    Ok(spec)
}

/// A syscall argument: an integer (negative ones as two's complement).
fn syscall_word(call: &str, name: &str, v: &Value) -> ApiResult<u64> {
    match v {
        Value::Nil => Ok(0),
        Value::Boolean(b) => Ok(*b as u64),
        _ => args::integer(v).map(|i| i as u64).ok_or_else(|| {
            ApiError::msg(format!(
                "{call}: {name} must be an integer (got {})",
                args::show(v)
            ))
        }),
    }
}

/// `{ret=, result=, errno=, out_bufs={...}}`.
pub fn syscall_table(lua: &Lua, ret: i64, errno: i32, bufs: Vec<ByteBuf>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.raw_set("ret", ret)?;
    t.raw_set("result", ret)?;
    t.raw_set("errno", errno)?;
    let out = lua.create_table_with_capacity(bufs.len(), 0)?;
    for b in bufs {
        out.raw_push(lua.create_string(&b)?)?;
    }
    t.raw_set("out_bufs", out)?;
    Ok(t)
}
