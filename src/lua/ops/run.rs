//! Running programs: `run` (and the specs `run_async` shares).

use mlua::{Lua, MultiValue, Table, Value};
use provium_protocol::{Op, RunSpec, CHUNK_LEN};
use serde_bytes::ByteBuf;

use super::reply::{convert, run_one, send_upload};
use super::request::{Kind, Request};
use crate::lua::args::{self, arg};
use crate::lua::errors::{ApiError, ApiResult};
use crate::lua::target::Target;
use crate::transport::Completed;

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

/// `run(cmd, args_or_opts?)` as one request (a batch entry).
pub fn build(call: &str, t: &Target, rest: &[Value]) -> ApiResult<Request> {
    let spec = run_spec(call, arg(rest, 0), arg(rest, 1), rest.len(), t.run_timeout)?;
    let program = spec.program.clone();
    let command = command_line(&spec);
    let mut r = Request::new(call, Op::Run(spec), Kind::Run, Some(program));
    r.command = Some(command);
    Ok(r)
}

/// `run` called directly: stdin beyond one chunk streams after the call.
pub fn call(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    let mut req = build(call, t, rest)?;
    if let Op::Run(spec) = &mut req.op {
        if spec.stdin.len() > CHUNK_LEN {
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
