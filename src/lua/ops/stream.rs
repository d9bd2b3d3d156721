//! Streams: `tail_file` and `fd_stream` (both return a Tail).

use mlua::Value;
use provium_protocol::{HandleId, Op, StreamSource, TailStart};

use crate::lua::args::{self, arg, quote};
use crate::lua::errors::{ApiError, ApiResult};
use crate::lua::file::FileUd;
use crate::lua::tail::TailUd;
use crate::lua::target::Target;

/// `tail_file(path, {start=}?)`.
pub fn tail_file(call: &str, t: &Target, rest: &[Value]) -> ApiResult<TailUd> {
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

/// `fd_stream(file_or_handle)`.
pub fn fd_stream(call: &str, t: &Target, rest: &[Value]) -> ApiResult<TailUd> {
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
