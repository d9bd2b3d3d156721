//! File handles (`vm:open_file`): a cursor on a file that lives in the agent
//! (or in a worker, for `worker:open_file`).

use std::sync::Mutex;

use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use provium_protocol::{
    HandleId, IoctlSpec, Op, OpenMode, Reply, StreamSource, TailStart, Whence, CHUNK_LEN,
};
use serde_bytes::ByteBuf;

use super::args;
use super::args::{arg, quote};
use super::errors::{guest_failure, ret, ApiError, ApiResult};
use super::tail::TailUd;
use super::target::Target;

/// Chunk size of `read_all`.
const READ_ALL_CHUNK: u64 = 64 * 1024;

/// An open file as Lua holds it.
pub struct FileUd {
    t: Target,
    handle: Mutex<Option<HandleId>>,
    path: Vec<u8>,
    /// Host-side copy of the cursor (`tell` asks the agent).
    cursor: Mutex<u64>,
}

/// Validates an open mode table.
pub fn open_mode(call: &str, v: &Value) -> ApiResult<OpenMode> {
    let t = match v {
        Value::Table(t) => t,
        other => {
            return Err(ApiError::msg(format!(
                "{call}: mode must be a table like {{read=true}} (got {})",
                args::show(other)
            )))
        }
    };
    args::check_keys(
        call,
        "mode",
        t,
        &[
            "read",
            "write",
            "append",
            "create",
            "truncate",
            "exclusive",
            "perm",
        ],
    )?;
    let b = |k| args::field_bool(call, t, k, "mode");
    let mode = OpenMode {
        read: b("read")?,
        write: b("write")?,
        append: b("append")?,
        create: b("create")?,
        truncate: b("truncate")?,
        exclusive: b("exclusive")?,
        perm: args::field_mode(call, t, "perm", "mode")?,
    };
    if !(mode.read || mode.write || mode.append) {
        return Err(ApiError::msg(format!(
            "{call}: must specify at least one of read, write, append (an empty mode would defer errors to the first I/O)"
        )));
    }
    if (mode.create || mode.truncate) && !(mode.write || mode.append) {
        return Err(ApiError::msg(format!(
            "{call}: create and truncate need write or append access"
        )));
    }
    if mode.exclusive && !mode.create {
        return Err(ApiError::msg(format!(
            "{call}: exclusive needs create=true"
        )));
    }
    Ok(mode)
}

impl FileUd {
    /// Opens `path` on `t`.
    pub fn open(call: &str, t: &Target, rest: &[Value]) -> ApiResult<FileUd> {
        let path = args::path(call, "path", arg(rest, 0))?;
        let mode = open_mode(call, arg(rest, 1))?;
        let done = t.roundtrip(
            call,
            Op::OpenFile {
                path: path.clone(),
                mode,
            },
        )?;
        match done.result {
            Ok(Reply::Handle(h)) => Ok(FileUd {
                t: t.clone(),
                handle: Mutex::new(Some(h)),
                path,
                cursor: Mutex::new(0),
            }),
            Ok(_) => Err(ApiError::msg(format!("{call}: unexpected reply"))),
            Err(f) => Err(guest_failure(
                call,
                format!("{call}({})", quote(&path)),
                Some(&path),
                f,
            )),
        }
    }

    fn handle(&self, call: &str) -> ApiResult<HandleId> {
        match *self.handle.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(h) => Ok(h),
            None => Err(ApiError::msg(format!("{call}: file is closed"))),
        }
    }

    /// The handle id, 0 when closed.
    /// The handle id if the File is open and lives where `t` points (the
    /// same VM or worker); an error for `call` otherwise.
    pub fn handle_for(&self, call: &str, t: &Target) -> ApiResult<u64> {
        if !self.t.same_as(t) {
            return Err(ApiError::msg(format!(
                "{call}: the File belongs to {}, not to {}",
                self.t.label, t.label
            )));
        }
        match self.fd() {
            0 => Err(ApiError::msg(format!("{call}: file is closed"))),
            h => Ok(h),
        }
    }

    /// The agent's handle id of the file; 0 once it is closed.
    pub fn fd(&self) -> u64 {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|h| h.0)
            .unwrap_or(0)
    }

    fn op(&self, call: &str, op: Op) -> ApiResult<Reply> {
        let done = self.t.roundtrip(call, op)?;
        done.result.map_err(|f| {
            guest_failure(
                call,
                format!("{call}() on {}", quote(&self.path)),
                Some(&self.path),
                f,
            )
        })
    }

    fn advance(&self, n: u64) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    fn read(&self, call: &str, n: u64) -> ApiResult<Vec<u8>> {
        let handle = self.handle(call)?;
        let mut out = Vec::new();
        // The agent answers at most one chunk per read; larger requests loop
        // until `n` bytes or end of file.
        while (out.len() as u64) < n {
            let want = (n - out.len() as u64).min(CHUNK_LEN as u64);
            match self.op(call, Op::FileRead { handle, len: want })? {
                Reply::Bytes(b) if b.is_empty() => break,
                Reply::Bytes(b) => {
                    let short = (b.len() as u64) < want;
                    out.extend_from_slice(&b);
                    if short {
                        break;
                    }
                }
                _ => return Err(ApiError::msg(format!("{call}: unexpected reply"))),
            }
        }
        self.advance(out.len() as u64);
        Ok(out)
    }

    /// Closes the file (idempotent).
    pub fn close(&self) -> ApiResult<()> {
        let taken = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = taken {
            if self.t.client.closed_reason().is_none() {
                self.op("file:close", Op::Close { handle })?;
            }
        }
        Ok(())
    }
}

impl Drop for FileUd {
    fn drop(&mut self) {
        // Garbage collection: close without waiting for the agent.
        if let Some(handle) = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.t.fire(Op::Close { handle });
        }
    }
}

fn whence(call: &str, v: &Value) -> ApiResult<Whence> {
    match v {
        Value::Nil => Ok(Whence::Set),
        Value::String(s) => match s.as_bytes().as_ref() {
            b"set" => Ok(Whence::Set),
            b"cur" => Ok(Whence::Cur),
            b"end" => Ok(Whence::End),
            _ => Err(ApiError::msg(format!(
                "{call}: whence must be set/cur/end, got `{}`",
                s.to_string_lossy()
            ))),
        },
        other => Err(ApiError::msg(format!(
            "{call}: whence must be set/cur/end, got {}",
            args::show(other)
        ))),
    }
}

/// `ioctl(handle, cmd, data?, opts?)` on a file handle of `t`.
pub fn ioctl(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<Table> {
    let handle = match arg(rest, 0) {
        Value::Nil => {
            return Err(ApiError::msg(format!(
                "{call}: file must be a File or a handle id from file:fd() (got nil)"
            )))
        }
        Value::UserData(ud) => match ud.borrow::<FileUd>() {
            Ok(f) => HandleId(f.handle_for(call, t)?),
            Err(_) => {
                return Err(ApiError::msg(format!(
                    "{call}: file must be a File or a handle id from file:fd() (got a userdata)"
                )))
            }
        },
        v => match args::integer(v) {
            Some(i) if i > 0 => HandleId(i as u64),
            _ => {
                return Err(ApiError::msg(format!(
                    "{call}: file must be a File or a handle id from file:fd() (got {})",
                    args::show(v)
                )))
            }
        },
    };
    if handle.0 == 0 {
        return Err(ApiError::msg(format!("{call}: file is closed")));
    }
    let cmd = match arg(rest, 1) {
        Value::Nil => return Err(ApiError::msg(format!("{call}: missing cmd"))),
        v => args::integer(v).ok_or_else(|| {
            ApiError::msg(format!(
                "{call}: cmd must be an integer (got {})",
                args::show(v)
            ))
        })? as u64,
    };
    let data = match arg(rest, 2) {
        Value::Nil => Vec::new(),
        v => args::bytes(call, "data", v)?,
    };
    let mut bufs = Vec::new();
    let mut ptr_offsets = Vec::new();
    if let Some(o) = args::opt_table(call, "opts", arg(rest, 3))? {
        args::check_keys(call, "opts", &o, &["bufs", "ptr_offsets"])?;
        if let Some(b) = args::opt_table(call, "opts.bufs", &o.raw_get::<Value>("bufs")?)? {
            for i in 1..=b.raw_len() {
                bufs.push(ByteBuf::from(args::bytes(
                    call,
                    &format!("opts.bufs[{i}]"),
                    &b.raw_get(i)?,
                )?));
            }
        }
        if let Some(p) = args::opt_table(
            call,
            "opts.ptr_offsets",
            &o.raw_get::<Value>("ptr_offsets")?,
        )? {
            for i in 1..=p.raw_len() {
                let v: Value = p.raw_get(i)?;
                match args::integer(&v) {
                    Some(off) if off >= 0 && (off as usize) + 8 <= data.len() => ptr_offsets.push(off as u64),
                    _ => {
                        return Err(ApiError::msg(format!(
                            "{call}: opts.ptr_offsets[{i}] must be an offset in data leaving room for 8 bytes (got {})",
                            args::show(&v)
                        )))
                    }
                }
            }
        }
        if ptr_offsets.len() != bufs.len() {
            return Err(ApiError::msg(format!(
                "{call}: opts.bufs and opts.ptr_offsets must have the same length"
            )));
        }
    }
    let done = t.roundtrip(
        call,
        Op::Ioctl(IoctlSpec {
            handle,
            cmd,
            data: ByteBuf::from(data),
            bufs,
            ptr_offsets,
        }),
    )?;
    match done.result {
        Ok(Reply::Ioctl { ret, data, bufs }) => {
            let out = lua.create_table()?;
            out.raw_set("ret", ret)?;
            out.raw_set("result", ret)?;
            out.raw_set("out_data", lua.create_string(&data)?)?;
            let ob = lua.create_table()?;
            for b in bufs {
                ob.raw_push(lua.create_string(&b)?)?;
            }
            out.raw_set("out_bufs", ob)?;
            Ok(out)
        }
        Ok(_) => Err(ApiError::msg(format!("{call}: unexpected reply"))),
        Err(f) => Err(guest_failure(
            call,
            format!("{call}(handle#{}, {cmd:#x})", handle.0),
            None,
            f,
        )),
    }
}

impl UserData for FileUd {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("read", |lua, this, n: Value| {
            let r = (|| {
                let n = match args::integer(&n) {
                    Some(n) if n >= 0 => n as u64,
                    _ => {
                        return Err(ApiError::msg(format!(
                            "file:read: n must be a non-negative integer (got {})",
                            args::show(&n)
                        )))
                    }
                };
                Ok(lua.create_string(this.read("file:read", n)?)?)
            })();
            ret(lua, r)
        });
        m.add_method("read_all", |lua, this, ()| {
            let r = (|| {
                let mut all = Vec::new();
                loop {
                    let chunk = this.read("file:read_all", READ_ALL_CHUNK)?;
                    if chunk.is_empty() {
                        break;
                    }
                    all.extend_from_slice(&chunk);
                }
                Ok(lua.create_string(&all)?)
            })();
            ret(lua, r)
        });
        m.add_method("write", |lua, this, data: Value| {
            let r = (|| {
                let handle = this.handle("file:write")?;
                let data = args::bytes("file:write", "data", &data)?;
                let mut written = 0usize;
                // One agent write per chunk; stops at the first short write.
                for chunk in data.chunks(CHUNK_LEN) {
                    let n = match this.op(
                        "file:write",
                        Op::FileWrite {
                            handle,
                            data: ByteBuf::from(chunk),
                        },
                    )? {
                        Reply::Count(n) => n as usize,
                        _ => return Err(ApiError::msg("file:write: unexpected reply")),
                    };
                    written += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                this.advance(written as u64);
                Ok(written)
            })();
            ret(lua, r)
        });
        m.add_method("seek", |lua, this, (off, wh): (Value, Value)| {
            let r = (|| {
                let handle = this.handle("file:seek")?;
                let offset = match &off {
                    Value::Nil => 0,
                    v => args::integer(v).ok_or_else(|| {
                        ApiError::msg(format!(
                            "file:seek: offset must be an integer (got {})",
                            args::show(v)
                        ))
                    })?,
                };
                let whence = whence("file:seek", &wh)?;
                match this.op(
                    "file:seek",
                    Op::FileSeek {
                        handle,
                        offset,
                        whence,
                    },
                )? {
                    Reply::Count(pos) => {
                        *this.cursor.lock().unwrap_or_else(|e| e.into_inner()) = pos;
                        Ok(pos)
                    }
                    _ => Err(ApiError::msg("file:seek: unexpected reply")),
                }
            })();
            ret(lua, r)
        });
        m.add_method("tell", |lua, this, ()| {
            let r = (|| {
                let handle = this.handle("file:tell")?;
                match this.op(
                    "file:tell",
                    Op::FileSeek {
                        handle,
                        offset: 0,
                        whence: Whence::Cur,
                    },
                )? {
                    Reply::Count(pos) => {
                        *this.cursor.lock().unwrap_or_else(|e| e.into_inner()) = pos;
                        Ok(pos)
                    }
                    _ => Err(ApiError::msg("file:tell: unexpected reply")),
                }
            })();
            ret(lua, r)
        });
        m.add_method("close", |lua, this, ()| ret(lua, this.close()));
        m.add_method("fd", |lua, this, ()| ret(lua, Ok(this.fd())));
        m.add_method("is_closed", |lua, this, ()| ret(lua, Ok(this.fd() == 0)));
        m.add_method("path", |lua, this, ()| {
            ret(lua, lua.create_string(&this.path).map_err(ApiError::from))
        });
        m.add_method("tail_stream", |lua, this, ()| {
            let r = (|| {
                this.handle("file:tail_stream")?;
                let pos = *this.cursor.lock().unwrap_or_else(|e| e.into_inner());
                let tail = TailUd::start(
                    &this.t,
                    "file:tail_stream",
                    Op::Stream(StreamSource::File {
                        path: this.path.clone(),
                        start: TailStart::Offset(pos),
                    }),
                    format!("tail_stream({})", quote(&this.path)),
                )?;
                Ok(lua.create_userdata(tail)?)
            })();
            ret(lua, r)
        });
    }
}
