//! File-system operations: read_file, write_file, stat, listdir, mkdir,
//! unlink, rename, chmod, symlink.

use mlua::{Lua, MultiValue, Value};
use provium_protocol::{FileAttrs, Op, CHUNK_LEN};
use serde_bytes::ByteBuf;

use super::reply::send_upload;
use super::request::{Kind, Request};
use crate::lua::args::{self, arg, quote};
use crate::lua::errors::{ApiError, ApiResult};
use crate::lua::target::Target;

/// Default cap of `read_file` (`opts.max_size`): a runaway read (a device,
/// a file that keeps growing) fails instead of exhausting host memory.
pub const DEFAULT_READ_CAP: u64 = 2 << 30;

/// `read_file(path, {max_size=}?)`.
pub fn read_file(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
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
    Ok(req)
}

/// `write_file(path, data, {perm=, uid=, gid=}?)` as one frame (a batch entry).
pub fn write_file(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
    let path = args::path(call, "path", arg(rest, 0))?;
    let data = args::bytes(call, "data", arg(rest, 1))?;
    let op = Op::WriteFile {
        path: path.clone(),
        attrs: file_attrs(call, arg(rest, 2))?,
        data: ByteBuf::from(data),
        more: false,
    };
    Ok(Request::new(call, op, Kind::Unit, Some(path)))
}

/// `stat(path, {follow=}?)`.
pub fn stat(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
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
    Ok(Request::new(call, op, Kind::Stat, Some(path)))
}

/// `listdir(path)`.
pub fn listdir(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
    let path = args::path(call, "path", arg(rest, 0))?;
    Ok(Request::new(
        call,
        Op::ListDir { path: path.clone() },
        Kind::Entries,
        Some(path),
    ))
}

/// `mkdir(path, {parents=, perm=}?)`.
pub fn mkdir(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
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
    Ok(Request::new(call, op, Kind::Unit, Some(path)))
}

/// `unlink(path)`.
pub fn unlink(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
    let path = args::path(call, "path", arg(rest, 0))?;
    Ok(Request::new(
        call,
        Op::Unlink { path: path.clone() },
        Kind::Unit,
        Some(path),
    ))
}

/// `rename(from, to)`.
pub fn rename(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
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
    Ok(r)
}

/// `symlink(target, path)`.
pub fn symlink(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
    let target = args::path(call, "target", arg(rest, 0))?;
    let path = args::path(call, "path", arg(rest, 1))?;
    let mut r = Request::new(
        call,
        Op::Symlink {
            target: target.clone(),
            path: path.clone(),
        },
        Kind::Unit,
        Some(path.clone()),
    );
    r.shown = Some(format!("{call}({}, {})", quote(&target), quote(&path)));
    Ok(r)
}

/// `chmod(path, mode)`.
pub fn chmod(call: &str, _t: &Target, rest: &[Value]) -> ApiResult<Request> {
    let path = args::path(call, "path", arg(rest, 0))?;
    let mode = args::mode(call, "mode", arg(rest, 1))?;
    let op = Op::Chmod {
        path: path.clone(),
        mode,
    };
    Ok(Request::new(call, op, Kind::Unit, Some(path)))
}

/// `write_file` called directly: data beyond one chunk streams after the
/// call instead of travelling in one huge frame.
pub fn write_file_call(
    _lua: &Lua,
    call: &str,
    t: &Target,
    rest: &[Value],
) -> ApiResult<MultiValue> {
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
    let attrs = file_attrs(call, arg(rest, 2))?;
    upload_file(t, call, path, attrs, &data.as_bytes())?;
    Ok(MultiValue::new())
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

fn upload_file(
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
