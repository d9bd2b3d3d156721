//! Tails: byte streams that follow a source (a file, an open file, a process's
//! output, the serial console).
//!
//! Agent-side sources arrive as `Data` frames of one long call; the console is
//! read from the host's own capture. Reads block on a channel or condition
//! variable, never on a timer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mlua::{UserData, UserDataMethods, Value};
use provium_protocol::Op;

use super::args;
use super::errors::{ret, ApiError, ApiResult};
use super::target::Target;
use crate::transport::client::{Event, Next, PendingCall};
use crate::vm::console::Console;

/// Default wait of `next`, `read_until` and `expect`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default window of `drain`.
const DEFAULT_DRAIN: Duration = Duration::from_millis(500);

enum Source {
    Agent { t: Target, call: PendingCall },
    Console { console: Arc<Console>, pos: u64 },
}

struct State {
    source: Option<Source>,
    /// Bytes received but not yet handed out.
    pending: Vec<u8>,
    /// The source ended.
    ended: bool,
}

/// A tail as Lua holds it.
pub struct TailUd {
    state: Mutex<State>,
    /// What it follows, for messages and `tostring`.
    pub what: String,
}

/// One step of reading.
enum Got {
    Bytes(Vec<u8>),
    Timeout,
    End,
}

impl TailUd {
    /// Starts an agent-side stream.
    pub fn start(t: &Target, call: &str, op: Op, what: String) -> ApiResult<TailUd> {
        let pending = t.call(call, op)?;
        // The agent acknowledges an open source with an empty Data frame;
        // an opening failure (ENOENT, an unknown handle) is the reply.
        match t.client.next(&pending, None) {
            Next::Event(Event::Data(_, _, range)) if range.is_empty() => {}
            Next::Event(Event::Reply(Err(f))) => {
                return Err(super::errors::guest_failure(
                    call,
                    format!("{}:{what}", t.prefix),
                    None,
                    f,
                ));
            }
            Next::Event(_) => {
                return Err(ApiError::msg(format!(
                    "{call}: the agent sent an unexpected first frame"
                )))
            }
            Next::Interrupted => return Err(t.interrupted(call, &pending)),
            Next::Timeout | Next::Closed => {
                return Err(ApiError::msg(format!("{call}: {} is gone", t.label)));
            }
        }
        Ok(TailUd {
            state: Mutex::new(State {
                source: Some(Source::Agent {
                    t: t.clone(),
                    call: pending,
                }),
                pending: Vec::new(),
                ended: false,
            }),
            what,
        })
    }

    /// A tail over the live console, from its current end.
    pub fn console(console: Arc<Console>, what: String) -> TailUd {
        let pos = console.end_offset();
        TailUd {
            state: Mutex::new(State {
                source: Some(Source::Console { console, pos }),
                pending: Vec::new(),
                ended: false,
            }),
            what,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the stream (idempotent): the agent frees it at once.
    pub fn close(&self) {
        let mut st = self.lock();
        st.pending.clear();
        if let Some(Source::Agent { t, call }) = st.source.take() {
            t.client.cancel(call.id);
        }
    }

    /// Waits for the next bytes from the source.
    fn pull(st: &mut State, call: &str, timeout: Option<Duration>) -> ApiResult<Got> {
        if st.ended {
            return Ok(Got::End);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let Some(source) = st.source.as_mut() else {
            return Err(ApiError::msg(format!("{call}: stream closed")));
        };
        match source {
            Source::Agent { t, call: pending } => {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                match t.client.next(pending, left) {
                    // A stream call carries one source: its channel does not
                    // matter (process streams use their own).
                    Next::Event(Event::Data(_, body, range)) => {
                        Ok(Got::Bytes(body[range].to_vec()))
                    }
                    Next::Event(Event::Reply(Ok(_))) => {
                        st.ended = true;
                        Ok(Got::End)
                    }
                    Next::Event(Event::Reply(Err(f))) => {
                        st.ended = true;
                        Err(ApiError::msg(format!("{call}: stream source error: {f}")))
                    }
                    Next::Timeout => Ok(Got::Timeout),
                    // The stream stays open: a later read may go on.
                    Next::Interrupted => {
                        Err(t.infra(call, crate::transport::TransportError::Interrupted))
                    }
                    Next::Closed => {
                        st.ended = true;
                        Err(ApiError::msg(format!(
                            "{call}: {} is gone ({})",
                            t.label,
                            t.end_reason()
                        )))
                    }
                }
            }
            Source::Console { console, pos } => {
                let (bytes, end, ended) = console.read_from(*pos, timeout);
                *pos = end;
                if !bytes.is_empty() {
                    return Ok(Got::Bytes(bytes));
                }
                if ended {
                    st.ended = true;
                    return Ok(Got::End);
                }
                Ok(Got::Timeout)
            }
        }
    }

    fn next(&self, timeout: Option<Duration>) -> ApiResult<Option<Vec<u8>>> {
        let mut st = self.lock();
        if !st.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut st.pending)));
        }
        if st.source.is_none() {
            return Ok(None);
        }
        match Self::pull(&mut st, "tail:next", timeout)? {
            Got::Bytes(b) => Ok(Some(b)),
            Got::Timeout | Got::End => Ok(None),
        }
    }

    /// Reads until `delim`; returns everything up to and including it.
    fn read_until(
        &self,
        call: &str,
        delim: &[u8],
        timeout: Duration,
        keep: bool,
    ) -> ApiResult<Vec<u8>> {
        let mut st = self.lock();
        let deadline = Instant::now() + timeout;
        let mut searched = 0;
        loop {
            if let Some(i) = find(&st.pending, delim, searched) {
                let end = i + delim.len();
                let rest = st.pending.split_off(end);
                let found = std::mem::replace(&mut st.pending, rest);
                return Ok(if keep { found } else { Vec::new() });
            }
            searched = st
                .pending
                .len()
                .saturating_sub(delim.len().saturating_sub(1));
            if st.source.is_none() {
                return Err(ApiError::msg(format!("{call}: stream closed")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match Self::pull(&mut st, call, Some(left))? {
                Got::Bytes(b) => st.pending.extend_from_slice(&b),
                Got::Timeout => {
                    return Err(ApiError::msg(format!(
                        "{call} timed out after {:.1} s waiting for {}; seen: {}",
                        timeout.as_secs_f64(),
                        super::args::quote(delim),
                        seen(&st.pending)
                    )))
                }
                Got::End => {
                    return Err(ApiError::msg(format!(
                        "{call}: stream EOF before {}; seen: {}",
                        super::args::quote(delim),
                        seen(&st.pending)
                    )))
                }
            }
        }
    }

    fn drain(&self, window: Duration) -> ApiResult<Vec<Vec<u8>>> {
        let mut st = self.lock();
        let mut out = Vec::new();
        if !st.pending.is_empty() {
            out.push(std::mem::take(&mut st.pending));
        }
        if st.source.is_none() {
            return Ok(out);
        }
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            match Self::pull(&mut st, "tail:drain", Some(left))? {
                Got::Bytes(b) => out.push(b),
                Got::Timeout | Got::End => return Ok(out),
            }
        }
    }

    fn eof(&self) -> bool {
        let st = self.lock();
        st.pending.is_empty() && (st.ended || st.source.is_none())
    }
}

impl Drop for TailUd {
    fn drop(&mut self) {
        self.close();
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if hay.len() < needle.len() {
        return None;
    }
    (from.min(hay.len())..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// What was seen, shortened for messages.
fn seen(b: &[u8]) -> String {
    const MAX: usize = 400;
    if b.len() <= MAX {
        super::args::quote(b)
    } else {
        format!("…{}", super::args::quote(&b[b.len() - MAX..]))
    }
}

fn opt_timeout(call: &str, v: &Value, default: Duration) -> ApiResult<Duration> {
    if v.is_nil() {
        Ok(default)
    } else {
        args::duration(call, "timeout", v)
    }
}

impl UserData for TailUd {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("next", |lua, this, timeout: Value| {
            let r = (|| {
                let t = opt_timeout("tail:next", &timeout, DEFAULT_TIMEOUT)?;
                match this.next(Some(t))? {
                    Some(b) => Ok(Value::String(lua.create_string(&b)?)),
                    None => Ok(Value::Nil),
                }
            })();
            ret(lua, r)
        });
        m.add_method(
            "read_until",
            |lua, this, (delim, timeout): (Value, Value)| {
                let r = (|| {
                    let d = args::bytes("tail:read_until", "delim", &delim)?;
                    let t = opt_timeout("tail:read_until", &timeout, DEFAULT_TIMEOUT)?;
                    let got = this.read_until("tail:read_until", &d, t, true)?;
                    Ok(lua.create_string(&got)?)
                })();
                ret(lua, r)
            },
        );
        m.add_method("expect", |lua, this, (pattern, timeout): (Value, Value)| {
            let r = (|| {
                let p = args::bytes("tail:expect", "pattern", &pattern)?;
                let t = opt_timeout("tail:expect", &timeout, DEFAULT_TIMEOUT)?;
                this.read_until("tail:expect", &p, t, false)?;
                Ok(pattern.clone())
            })();
            ret(lua, r)
        });
        m.add_method("drain", |lua, this, timeout: Value| {
            let r = (|| {
                let t = opt_timeout("tail:drain", &timeout, DEFAULT_DRAIN)?;
                let chunks = this.drain(t)?;
                let out = lua.create_table_with_capacity(chunks.len(), 0)?;
                for c in chunks {
                    out.raw_push(lua.create_string(&c)?)?;
                }
                Ok(out)
            })();
            ret(lua, r)
        });
        m.add_method("eof", |lua, this, ()| ret(lua, Ok(this.eof())));
        m.add_method("close", |lua, this, ()| {
            this.close();
            ret(lua, Ok(()))
        });
        m.add_method("describe", |lua, this, ()| ret(lua, Ok(this.what.clone())));
    }
}
