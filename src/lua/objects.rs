//! Operations that return objects (files, tails, processes, workers), on top
//! of the plain operations of [`super::ops`].

use mlua::{IntoLuaMulti, Lua, MultiValue, Value};
use provium_protocol::{HandleId, Op, StreamSource, TailStart};

use super::args;
use super::errors::{ApiError, ApiResult};
use super::file::{self, FileUd};
use super::ops::{self, arg, quote};
use super::process::ProcessUd;
use super::tail::TailUd;
use super::target::Target;
use super::worker::WorkerUd;

/// Splits the arguments of a core `call(name, ...)` into the operation name
/// and its Lua arguments.
pub fn split_call(who: &str, mv: MultiValue) -> ApiResult<(String, Vec<Value>)> {
    let mut it = mv.into_iter();
    let op = match it.next() {
        Some(Value::String(s)) => s.to_str()?.to_string(),
        _ => {
            return Err(ApiError::msg(format!(
                "{who}: internal: operation name missing"
            )))
        }
    };
    Ok((op, it.collect()))
}

/// Runs operation `op` on `t`.
pub fn dispatch(lua: &Lua, t: &Target, op: &str, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(match op {
        "open_file" => lua
            .create_userdata(FileUd::open(t, rest)?)?
            .into_lua_multi(lua)?,
        "tail_file" => lua
            .create_userdata(tail_file(t, rest)?)?
            .into_lua_multi(lua)?,
        "fd_stream" => lua
            .create_userdata(fd_stream(t, rest)?)?
            .into_lua_multi(lua)?,
        "run_async" => lua
            .create_userdata(ProcessUd::start(t, rest)?)?
            .into_lua_multi(lua)?,
        "ioctl" => file::ioctl(lua, t, rest)?.into_lua_multi(lua)?,
        "spawn_worker" => lua
            .create_userdata(WorkerUd::spawn(t, rest)?)?
            .into_lua_multi(lua)?,
        _ => return ops::dispatch(lua, t, op, rest),
    })
}

fn tail_file(t: &Target, rest: &[Value]) -> ApiResult<TailUd> {
    let call = format!("{}:tail_file", t.prefix);
    let call = call.as_str();
    let path = args::path(call, "path", arg(rest, 0))?;
    let mut start = TailStart::End;
    if let Some(o) = args::opt_table(call, "opts", arg(rest, 1))? {
        args::check_keys(call, "opts", &o, &["start"])?;
        let v: Value = o.raw_get("start")?;
        start = match &v {
            Value::Nil => TailStart::End,
            Value::String(s) => match s.as_bytes().as_ref() {
                b"end" => TailStart::End,
                b"beginning" | b"start" => TailStart::Offset(0),
                _ => {
                    return Err(ApiError::msg(format!(
                        "{call}: opts.start = {} (expected \"beginning\"|\"start\"|\"end\"|number)",
                        args::show(&v)
                    )))
                }
            },
            Value::Integer(_) | Value::Number(_) => {
                let n = match &v {
                    Value::Integer(i) => *i as f64,
                    Value::Number(n) => *n,
                    _ => 0.0,
                };
                if !n.is_finite() {
                    return Err(ApiError::msg(format!(
                        "{call}: opts.start must be finite (got {})",
                        args::show(&v)
                    )));
                }
                let n = n.trunc() as i64;
                if n >= 0 {
                    TailStart::Offset(n as u64)
                } else {
                    TailStart::FromEnd(n.unsigned_abs())
                }
            }
            other => {
                return Err(ApiError::msg(format!(
                    "{call}: opts.start must be \"beginning\", \"end\" or a byte offset (got {})",
                    args::show(other)
                )))
            }
        };
    }
    let what = format!("tail_file({})", quote(&path));
    TailUd::start(
        t,
        call,
        Op::Stream(StreamSource::File { path, start }),
        what,
    )
}

fn fd_stream(t: &Target, rest: &[Value]) -> ApiResult<TailUd> {
    let call = format!("{}:fd_stream", t.prefix);
    let call = call.as_str();
    let handle = match arg(rest, 0) {
        Value::UserData(ud) => match ud.borrow::<FileUd>() {
            Ok(f) => f.handle_for(call, t)?,
            Err(_) => {
                return Err(ApiError::msg(format!(
                    "{call}: expected a File or a handle id (got a userdata)"
                )))
            }
        },
        v => match args::integer(v) {
            Some(i) if i > 0 => i as u64,
            _ => {
                return Err(ApiError::msg(format!(
                    "{call}: expected a File or a positive handle id (got {})",
                    args::show(v)
                )))
            }
        },
    };
    TailUd::start(
        t,
        call,
        Op::Stream(StreamSource::Handle {
            handle: HandleId(handle),
        }),
        format!("fd_stream(handle#{handle})"),
    )
}
