//! The connection's reading side: frames in, routed to the calls waiting
//! for them.

use std::sync::Mutex;

use provium_protocol::{self as proto, AgentMsg};

use super::calls::{lock, Event, Shared};
use super::liveness::Liveness;

/// Read buffer of the connection: small frames (and their headers) arrive in
/// one read; bulk chunks, being larger, are read straight into their own
/// buffer instead of through this one.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// How a connection's stream of frames ended.
pub(crate) enum ReadEnd {
    /// The agent said hello again: its op server restarted (same stream).
    AgentHello,
    /// The stream ended or broke, for this reason.
    Ended(String),
}

impl ReadEnd {
    /// Why the stream ended, in words.
    pub(crate) fn reason(&self) -> &str {
        match self {
            ReadEnd::AgentHello => "the guest agent restarted",
            ReadEnd::Ended(r) => r,
        }
    }
}

/// Reads and routes frames until the stream ends or the agent says hello
/// again.
pub(crate) fn read_loop<R: std::io::Read>(
    rd: &mut R,
    shared: &Mutex<Shared>,
    live: &Liveness,
) -> ReadEnd {
    use std::io::Read;
    let mut header = [0u8; proto::FRAME_HEADER_LEN];
    loop {
        match rd.read_exact(&mut header) {
            Ok(_) => live.touch(),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return ReadEnd::Ended("the agent closed the connection".into())
            }
            Err(e) => return ReadEnd::Ended(format!("read from agent failed: {e}")),
        }
        let len = match proto::frame::body_len(header) {
            Ok(len) => len,
            Err(e) => return ReadEnd::Ended(format!("bad frame from agent: {e}")),
        };
        // Read into spare capacity: no zeroing of bulk chunks first.
        let mut body = Vec::with_capacity(len);
        match rd.take(len as u64).read_to_end(&mut body) {
            Ok(n) if n == len => {}
            Ok(n) => {
                return ReadEnd::Ended(format!(
                    "connection to agent lost inside a frame ({n} of {len} bytes)"
                ))
            }
            Err(e) => {
                return ReadEnd::Ended(format!("connection to agent lost inside a frame: {e}"))
            }
        }
        if let Some(view) = AgentMsg::data_view(&body) {
            match view {
                Ok(v) => {
                    let mut guard = lock(shared);
                    if let Some(tx) = guard.pending.get(&v.id) {
                        if tx.send(Event::Data(v.channel, body, v.chunk)).is_err() {
                            // The caller gave up on this call (a closed stream).
                            guard.pending.remove(&v.id);
                        }
                    }
                    continue;
                }
                Err(e) => return ReadEnd::Ended(format!("bad frame from agent: {e}")),
            }
        }
        let msg: AgentMsg = match proto::decode(&body) {
            Ok(m) => m,
            Err(e) => return ReadEnd::Ended(format!("bad frame from agent: {e}")),
        };
        match msg {
            AgentMsg::Reply { id, result } => {
                if let Some(tx) = lock(shared).pending.remove(&id) {
                    let _ = tx.send(Event::Reply(result));
                }
            }
            AgentMsg::Data { id, channel, chunk } => {
                // Not reached (data_view above), kept for completeness.
                if let Some(tx) = lock(shared).pending.get(&id) {
                    let len = chunk.len();
                    let _ = tx.send(Event::Data(channel, chunk.into_vec(), 0..len));
                }
            }
            AgentMsg::Hello(_) => return ReadEnd::AgentHello,
            AgentMsg::HelloRejected { reason, .. } => {
                return ReadEnd::Ended(format!("the agent rejected us in mid-session: {reason}"))
            }
        }
    }
}
