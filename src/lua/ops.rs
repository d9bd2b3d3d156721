//! Guest operations: Lua arguments in, one agent round trip, Lua values out.
//! Shared by everything that fronts an agent (VMs now, workers later).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Value};
use provium_protocol::{Op, Reply, RunOutcome, RunSpec, StatInfo, CHUNK_LEN};
use serde_bytes::ByteBuf;

use super::args;
use super::errors::{guest_failure, ApiError, ApiResult};
use super::vm::console_note;
use crate::transport::{Client, Completed, TransportError};
use crate::vm::console::Console;

/// What an operation runs against.
pub struct Target {
    pub client: Arc<Client>,
    pub console: Arc<Console>,
    /// `vm "name"`, for messages.
    pub label: String,
    /// `vm` or `worker`, for call names.
    pub prefix: &'static str,
}

impl Target {
    fn infra(&self, call: &str, e: TransportError) -> ApiError {
        ApiError::msg(format!(
            "{}: {call} failed: {e}{}",
            self.label,
            console_note(&self.console)
        ))
    }

    fn roundtrip(&self, call: &str, op: Op) -> ApiResult<Completed> {
        self.client.roundtrip(op).map_err(|e| self.infra(call, e))
    }
}

/// A Lua string literal for messages: `"/etc/x"`.
fn quote(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn arg(rest: &[Value], i: usize) -> &Value {
    rest.get(i).unwrap_or(&Value::Nil)
}

/// Runs operation `op` with Lua arguments `rest`.
pub fn dispatch(lua: &Lua, t: &Target, op: &str, rest: &[Value]) -> ApiResult<MultiValue> {
    let call = format!("{}:{op}", t.prefix);
    let call = call.as_str();
    match op {
        "read_file" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let done = t.roundtrip(call, Op::ReadFile { path: path.clone() })?;
            let data = body(call, &path, done, |r| match r {
                Reply::Bytes(b) => Some(b.into_vec()),
                _ => None,
            })?;
            Ok(lua.create_string(&data)?.into_lua_multi(lua)?)
        }
        "write_file" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let data = match arg(rest, 1) {
                Value::String(s) => s.clone(),
                other => {
                    return Err(ApiError::msg(format!(
                        "{call}: data must be a string (got {})",
                        args::show(other)
                    )))
                }
            };
            write_file(t, call, path, &data.as_bytes())?;
            Ok(MultiValue::new())
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
            let done = t.roundtrip(
                call,
                Op::Stat {
                    path: path.clone(),
                    follow,
                },
            )?;
            let st = unit_reply(call, &path, done, |r| match r {
                Reply::Stat(s) => Some(s),
                _ => None,
            })?;
            Ok(stat_table(lua, &st)?.into_lua_multi(lua)?)
        }
        "listdir" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let done = t.roundtrip(call, Op::ListDir { path: path.clone() })?;
            let entries = unit_reply(call, &path, done, |r| match r {
                Reply::Entries(e) => Some(e),
                _ => None,
            })?;
            let list = lua.create_table_with_capacity(entries.len(), 0)?;
            for e in entries {
                let row = lua.create_table_with_capacity(0, 2)?;
                row.raw_set("name", lua.create_string(&e.name)?)?;
                row.raw_set("entry_type", e.entry_type.as_str())?;
                list.raw_push(row)?;
            }
            Ok(list.into_lua_multi(lua)?)
        }
        "mkdir" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let mut parents = false;
            let mut perm = None;
            if let Some(o) = args::opt_table(call, "opts", arg(rest, 1))? {
                args::check_keys(call, "opts", &o, &["parents", "perm"])?;
                parents = args::field_bool(call, &o, "parents", "opts")?;
                perm = args::field_int(call, &o, "perm", "opts", 0, 0o7777)?.map(|p| p as u32);
            }
            let done = t.roundtrip(
                call,
                Op::Mkdir {
                    path: path.clone(),
                    parents,
                    perm,
                },
            )?;
            unit(call, &path, done)
        }
        "unlink" => {
            let path = args::path(call, "path", arg(rest, 0))?;
            let done = t.roundtrip(call, Op::Unlink { path: path.clone() })?;
            unit(call, &path, done)
        }
        "rename" => {
            let from = args::path(call, "from", arg(rest, 0))?;
            let to = args::path(call, "to", arg(rest, 1))?;
            let done = t.roundtrip(
                call,
                Op::Rename {
                    from: from.clone(),
                    to: to.clone(),
                },
            )?;
            match done.result {
                Ok(_) => Ok(MultiValue::new()),
                Err(f) => Err(guest_failure(
                    call,
                    format!("{call}({}, {})", quote(&from), quote(&to)),
                    Some(&from),
                    f,
                )),
            }
        }
        "run" => {
            let spec = run_spec(call, arg(rest, 0), arg(rest, 1), rest.len())?;
            let program = spec.program.clone();
            let done = t.roundtrip(call, Op::Run(spec))?;
            let Completed { result, channels } = done;
            let [_, mut out, mut err] = channels;
            match result {
                Ok(Reply::Run(o)) => {
                    Ok(run_result(lua, o, &mut out, &mut err)?.into_lua_multi(lua)?)
                }
                Ok(other) => Err(ApiError::msg(format!("{call}: unexpected reply {other:?}"))),
                Err(f) => Err(guest_failure(
                    call,
                    format!("{call}({})", quote(&program)),
                    Some(&program),
                    f,
                )),
            }
        }
        "ping" => {
            let done = t.roundtrip(call, Op::Ping)?;
            unit(call, b"", done)
        }
        other => Err(ApiError::msg(format!(
            "{}: unknown operation {other:?}",
            t.prefix
        ))),
    }
}

fn write_file(t: &Target, call: &str, path: Vec<u8>, data: &[u8]) -> ApiResult<()> {
    let (first, rest) = data.split_at(data.len().min(CHUNK_LEN));
    let more = !rest.is_empty();
    let pending = t
        .client
        .call(Op::WriteFile {
            path: path.clone(),
            perm: None,
            data: ByteBuf::from(first),
            more,
        })
        .map_err(|e| t.infra(call, e))?;
    if more {
        let mut chunks = rest.chunks(CHUNK_LEN).peekable();
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            t.client
                .send_data(pending.id, chunk, last)
                .map_err(|e| t.infra(call, e))?;
        }
    }
    let done = t.client.wait(pending).map_err(|e| t.infra(call, e))?;
    unit(call, &path, done).map(|_| ())
}

fn unit(call: &str, path: &[u8], done: Completed) -> ApiResult<MultiValue> {
    match done.result {
        Ok(_) => Ok(MultiValue::new()),
        Err(f) => Err(path_failure(call, path, f)),
    }
}

fn path_failure(call: &str, path: &[u8], f: provium_protocol::Failure) -> ApiError {
    let shown = if path.is_empty() {
        format!("{call}()")
    } else {
        format!("{call}({})", quote(path))
    };
    guest_failure(call, shown, (!path.is_empty()).then_some(path), f)
}

fn unit_reply<T>(
    call: &str,
    path: &[u8],
    done: Completed,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> ApiResult<T> {
    match done.result {
        Ok(r) => pick(r)
            .ok_or_else(|| ApiError::msg(format!("{call}: the agent sent an unexpected reply"))),
        Err(f) => Err(path_failure(call, path, f)),
    }
}

/// The `Data` on the body channel followed by the reply's tail.
fn body(
    call: &str,
    path: &[u8],
    done: Completed,
    pick: impl FnOnce(Reply) -> Option<Vec<u8>>,
) -> ApiResult<Vec<u8>> {
    let Completed { result, channels } = done;
    let [mut head, _, _] = channels;
    let tail = match result {
        Ok(r) => pick(r)
            .ok_or_else(|| ApiError::msg(format!("{call}: the agent sent an unexpected reply")))?,
        Err(f) => return Err(path_failure(call, path, f)),
    };
    if head.is_empty() {
        return Ok(tail);
    }
    head.extend_from_slice(&tail);
    Ok(head)
}

/// The `stat` result table.
pub fn stat_table(lua: &Lua, st: &StatInfo) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 16)?;
    t.raw_set("size", st.size)?;
    t.raw_set("mtime", st.mtime_ns as f64 / 1e9)?;
    t.raw_set("mtime_ns", st.mtime_ns)?;
    t.raw_set("atime", st.atime_ns as f64 / 1e9)?;
    t.raw_set("atime_ns", st.atime_ns)?;
    t.raw_set("ctime", st.ctime_ns as f64 / 1e9)?;
    t.raw_set("ctime_ns", st.ctime_ns)?;
    t.raw_set("perm", st.perm())?;
    t.raw_set("mode", st.mode)?;
    t.raw_set("entry_type", st.entry_type().as_str())?;
    t.raw_set("uid", st.uid)?;
    t.raw_set("gid", st.gid)?;
    t.raw_set("ino", st.ino)?;
    t.raw_set("nlink", st.nlink)?;
    t.raw_set("dev", st.dev)?;
    t.raw_set("rdev", st.rdev)?;
    t.raw_set("blocks", st.blocks)?;
    t.raw_set("blksize", st.blksize)?;
    Ok(t)
}

const RUN_OPTION_KEYS: &[&str] = &[
    "args",
    "env",
    "env_clear",
    "cwd",
    "stdin",
    "timeout",
    "timeout_ms",
];

/// Decodes the argument forms of `run`:
/// `run("cmd")` (sh -c), `run("prog", {"a", "b"})` (direct exec),
/// `run("prog", {args=, env=, env_clear=, cwd=, stdin=, timeout=})` (direct
/// exec with `args`, else `sh -c "prog"`).
pub fn run_spec(call: &str, cmd: &Value, second: &Value, nargs: usize) -> ApiResult<RunSpec> {
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
    let is_opts = RUN_OPTION_KEYS
        .iter()
        .any(|k| t.raw_get::<Value>(*k).map(|v| !v.is_nil()).unwrap_or(false));
    if !is_opts {
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
    if !timeout.is_nil() {
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

/// The fields of a RunResult (the prelude adds its methods).
fn run_result(
    lua: &Lua,
    o: RunOutcome,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
) -> mlua::Result<Table> {
    out.extend_from_slice(&o.stdout);
    err.extend_from_slice(&o.stderr);
    let t = lua.create_table_with_capacity(0, 6)?;
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

/// Waits until `pattern` appears in the console log.
pub fn console_expect(console: &Console, pattern: &[u8], timeout: Duration) -> ApiResult<()> {
    let deadline = Instant::now() + timeout;
    let mut watch = console.watch();
    loop {
        let log = console.contents();
        if pattern.is_empty() || log.windows(pattern.len()).any(|w| w == pattern) {
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
        let changed = crate::runtime::block_on(async move {
            let _ = tokio::time::timeout(left, watch.changed()).await;
            watch
        });
        watch = changed;
    }
}
