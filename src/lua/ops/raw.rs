//! Raw system calls: the argument spec of `syscall` (and `ioctl` buffers).

use mlua::Value;
use provium_protocol::{Nested, Op, SyscallSpec};
use serde_bytes::ByteBuf;

use super::request::{Kind, Request};
use crate::lua::args::{self, arg};
use crate::lua::errors::{ApiError, ApiResult};
use crate::lua::target::Target;

/// `syscall(nr, ...)`.
pub fn build(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
    Ok(Request::new(
        call,
        Op::Syscall(syscall_spec(call, rest)?),
        Kind::Syscall,
        None,
    ))
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
        // A string is a pointer to a NUL-terminated copy of it (paths,
        // names): one of the call's buffers, returned in `out_bufs`.
        if let Value::String(s) = v {
            let mut buf = s.as_bytes().to_vec();
            buf.push(0);
            spec.bufs.push(ByteBuf::from(buf));
            spec.ptrs.push(i as u8);
            continue;
        }
        spec.args[i] = syscall_word(call, &format!("argument #{}", i + 1), v)?;
    }
    Ok(spec)
}

/// A syscall argument: an integer (negative ones as two's complement), a
/// boolean (0 or 1) or nil (0).
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
