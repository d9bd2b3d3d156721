//! `read_file` into a Lua string built in place.
//!
//! A long file arrives in chunks, after a size hint from the agent, which
//! then waits for the host's go (an empty `Data`) so that nothing queues up
//! while the host prepares the result. Joining
//! the chunks and then handing the result to Lua (which copies it into its
//! own string) would hold the data twice. Instead a Lua string of the hinted
//! size is created first and the chunks are copied into it as they arrive
//! (each chunk is freed at once): host memory stays at the data itself plus a
//! chunk. Creating the string copies from an anonymous read-only mapping,
//! i.e. from the kernel's shared zero page, so that costs no memory either.
//!
//! Writing into a Lua string is done through the C API on a string that
//! nothing else references yet; long strings are neither interned nor hashed
//! until used as a table key, so filling it before anyone sees it is sound.

use std::ptr;

use mlua::{ffi, IntoLuaMulti, Lua, MultiValue};
use provium_protocol::{Reply, CH_BODY, CH_SIZE_HINT};

use super::args::quote;
use super::errors::{ApiError, ApiResult};
use super::ops::reply::convert;
use super::ops::request::Request;
use super::target::Target;
use crate::transport::client::{Event, Next, PendingCall};

/// Runs a `ReadFile` request and returns its body as a Lua string.
pub fn read_file(lua: &Lua, t: &Target, req: Request) -> ApiResult<MultiValue> {
    let pending = t.call(&req.name, req.op.clone())?;
    match t.client.next(&pending, None) {
        Next::Event(Event::Reply(result)) => convert(lua, &req, result, Default::default()),
        Next::Event(Event::Data(CH_SIZE_HINT, body, range)) => {
            let hint = <[u8; 8]>::try_from(&body[range])
                .map(u64::from_le_bytes)
                .map_err(|_| {
                    ApiError::msg(format!("{}: bad size hint from the agent", req.name))
                })?;
            if req.limit.is_some_and(|l| hint > l) {
                return Err(over_cap(t, &req, &pending, hint));
            }
            in_place(lua, t, &req, &pending, hint)
        }
        Next::Event(Event::Data(_, body, range)) => {
            joined(lua, t, &req, &pending, body[range].to_vec())
        }
        Next::Interrupted => Err(t.interrupted(&req.name, &pending)),
        Next::Timeout | Next::Closed => Err(t.gone(&req.name)),
    }
}

/// Cancels the read and says that `size` bytes exceed its cap.
fn over_cap(t: &Target, req: &Request, pending: &PendingCall, size: u64) -> ApiError {
    t.client.cancel(pending.id);
    let path = req.path.as_deref().map(quote).unwrap_or_default();
    ApiError::msg(format!(
        "{}({path}): the file is larger than the cap of {} ({size} bytes or more); \
         raise it with opts.max_size, or max_size = false for none",
        req.name,
        show_size(req.limit.unwrap_or(0))
    ))
}

/// Memory for `more` bytes in `v`, or an error (never an abort).
fn reserve(
    t: &Target,
    req: &Request,
    pending: &PendingCall,
    v: &mut Vec<u8>,
    more: usize,
) -> ApiResult<()> {
    v.try_reserve(more).map_err(|_| {
        t.client.cancel(pending.id);
        ApiError::msg(format!(
            "{}: cannot allocate {} more bytes on the host (read so far: {})",
            req.name,
            more,
            v.len()
        ))
    })
}

/// `2 GiB`, `512 MiB`, `100 KiB` or bytes.
pub fn show_size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if n >= unit && n % unit == 0 {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} bytes")
}

/// Fallback without a hint: join the chunks, then copy into Lua.
fn joined(
    lua: &Lua,
    t: &Target,
    req: &Request,
    pending: &PendingCall,
    mut body: Vec<u8>,
) -> ApiResult<MultiValue> {
    loop {
        match t.client.next(pending, None) {
            Next::Event(Event::Data(CH_BODY, chunk, range)) => {
                let bytes = &chunk[range];
                if req
                    .limit
                    .is_some_and(|l| (body.len() + bytes.len()) as u64 > l)
                {
                    return Err(over_cap(t, req, pending, (body.len() + bytes.len()) as u64));
                }
                reserve(t, req, pending, &mut body, bytes.len())?;
                body.extend_from_slice(bytes)
            }
            Next::Event(Event::Data(..)) => {}
            Next::Event(Event::Reply(result)) => {
                let reply = result.map_err(|f| req.failure(f))?;
                if let Reply::Bytes(tail) = reply {
                    reserve(t, req, pending, &mut body, tail.len())?;
                    body.extend_from_slice(&tail);
                }
                return Ok(lua.create_string(&body)?.into_lua_multi(lua)?);
            }
            Next::Interrupted => return Err(t.interrupted(&req.name, pending)),
            Next::Timeout | Next::Closed => return Err(t.gone(&req.name)),
        }
    }
}

/// An anonymous read-only mapping of `len` zero bytes (no memory used).
struct Zeros {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Zeros {
    fn new(len: usize) -> Option<Zeros> {
        // SAFETY: a fresh private anonymous mapping; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len.max(1),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Zeros {
            ptr,
            len: len.max(1),
        })
    }
}

impl Drop for Zeros {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Where the body goes while it arrives.
enum Sink {
    /// Into the Lua string on top of the stack (`dst`, `cap` bytes).
    Lua { dst: *mut u8, cap: usize },
    /// The file grew past the hint: the rest goes through a buffer.
    Spill(Vec<u8>),
}

fn in_place(
    lua: &Lua,
    t: &Target,
    req: &Request,
    pending: &PendingCall,
    hint: u64,
) -> ApiResult<MultiValue> {
    let cap = usize::try_from(hint)
        .map_err(|_| ApiError::msg(format!("{}: file too large for this host", req.name)))?;
    let zeros = Zeros::new(cap)
        .ok_or_else(|| ApiError::msg(format!("{}: cannot map {cap} bytes", req.name)))?;
    let mut outcome: Option<ApiError> = None;
    let out = &mut outcome;
    // SAFETY: `exec_raw` runs the closure in a protected call with the Lua
    // lock held; the string it pushes is referenced by nobody else until the
    // closure returns it, so writing its bytes through the C pointer is
    // sound (see the module docs). Every pointer stays within `cap`.
    let result: mlua::Result<mlua::Value> = unsafe {
        lua.exec_raw((), |state| {
            ffi::lua_pushlstring(state, zeros.ptr as *const libc::c_char, cap);
            let dst = ffi::lua_tolstring(state, -1, ptr::null_mut()) as *mut u8;
            // The string is ready (and faulted in): let the agent stream.
            if let Err(e) = t.client.send_data(pending.id, &[], true) {
                *out = Some(t.infra(&req.name, e));
                return;
            }
            let mut sink = Sink::Lua { dst, cap };
            let mut off = 0usize;
            let put = |sink: &mut Sink, bytes: &[u8], off: &mut usize| match sink {
                Sink::Lua { dst, cap } if *off + bytes.len() <= *cap => {
                    ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(*off), bytes.len());
                    *off += bytes.len();
                    true
                }
                Sink::Lua { dst, .. } => {
                    let mut v = Vec::new();
                    if v.try_reserve(*off + bytes.len()).is_err() {
                        return false;
                    }
                    v.extend_from_slice(std::slice::from_raw_parts(*dst, *off));
                    v.extend_from_slice(bytes);
                    *off += bytes.len();
                    *sink = Sink::Spill(v);
                    true
                }
                Sink::Spill(v) => {
                    if v.try_reserve(bytes.len()).is_err() {
                        return false;
                    }
                    v.extend_from_slice(bytes);
                    *off += bytes.len();
                    true
                }
            };
            // Adds `bytes` unless that passes the cap or memory runs out.
            let take = |sink: &mut Sink, bytes: &[u8], off: &mut usize| -> Option<ApiError> {
                let total = (*off + bytes.len()) as u64;
                if req.limit.is_some_and(|l| total > l) {
                    return Some(over_cap(t, req, pending, total));
                }
                if !put(sink, bytes, off) {
                    t.client.cancel(pending.id);
                    return Some(ApiError::msg(format!(
                        "{}: cannot allocate {total} bytes on the host",
                        req.name
                    )));
                }
                None
            };
            loop {
                match t.client.next(pending, None) {
                    Next::Event(Event::Data(CH_BODY, chunk, range)) => {
                        if let Some(e) = take(&mut sink, &chunk[range], &mut off) {
                            *out = Some(e);
                            break;
                        }
                    }
                    Next::Event(Event::Data(..)) => {}
                    Next::Event(Event::Reply(Ok(Reply::Bytes(tail)))) => {
                        if let Some(e) = take(&mut sink, &tail, &mut off) {
                            *out = Some(e);
                        }
                        break;
                    }
                    Next::Event(Event::Reply(Ok(_))) => {
                        *out = Some(ApiError::msg(format!("{}: unexpected reply", req.name)));
                        break;
                    }
                    Next::Event(Event::Reply(Err(f))) => {
                        *out = Some(req.failure(f));
                        break;
                    }
                    Next::Interrupted => {
                        *out = Some(t.interrupted(&req.name, pending));
                        break;
                    }
                    Next::Timeout | Next::Closed => {
                        *out = Some(t.gone(&req.name));
                        break;
                    }
                }
            }
            match sink {
                Sink::Lua { dst, .. } if off != cap => {
                    // Shorter than the hint: the exact prefix, as a new string.
                    ffi::lua_pushlstring(state, dst as *const libc::c_char, off);
                    ffi::lua_rotate(state, -2, 1);
                    ffi::lua_pop(state, 1);
                }
                Sink::Lua { .. } => {}
                Sink::Spill(v) => {
                    ffi::lua_pop(state, 1);
                    ffi::lua_pushlstring(state, v.as_ptr() as *const libc::c_char, v.len());
                }
            }
        })
    };
    if let Some(e) = outcome {
        return Err(e);
    }
    Ok(result?.into_lua_multi(lua)?)
}
