//! The host end of one multiplexed agent connection.
//!
//! A reader thread routes every incoming `Data`/`Reply` to the call it
//! belongs to. Lua threads register a call, write its frame and block on the
//! call's own channel: an operation costs one round trip, no connect and no
//! handshake.
//!
//! The connection is set up on the rock's runtime (listener, handshake), then
//! handed to a plain blocking reader thread. Measured reason: a `stat` round
//! trip may add at most 50 % to a raw echo (~250-330 µs under TCG here), and a
//! blocking `read` that returns when the reply lands saves the reactor's
//! `epoll_wait` and task wake-up on every reply.
//!
//! Writes happen on the calling thread, on a duplicate of the socket, under a
//! mutex (so frames never interleave), instead of being queued to a writer
//! task on the runtime. Measured reason: under TCG each hand-off between the
//! Lua thread and the runtime thread costs tens of microseconds, and a `stat`
//! round trip may add at most 50 % to a raw echo (~250-330 µs here). A
//! blocking write also gives bulk uploads natural back-pressure: the caller
//! waits while the socket is full, and nothing queues up in host memory.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::{self as proto, Failure, HostMsg, Op, Reply, RequestId};
use serde_bytes::ByteBuf;
use std::sync::mpsc;
use std::time::Duration;

pub use super::calls::Event;
use super::calls::{fail_all, lock, Shared};
use super::liveness::{Liveness, PING_AFTER, WAIT_SLICE};
use super::reader::{read_loop, ReadEnd, READ_BUFFER};
use super::writer::{FdWriter, WriteEnd};
use super::TransportError;
use crate::interrupt;

/// One live connection to an agent.
pub struct Client {
    writer: FdWriter,
    shared: Arc<Mutex<Shared>>,
    next_id: AtomicU64,
    /// The agent's hello.
    pub hello: proto::AgentHello,
    /// Turns what the reader saw at the connection's end into the reason
    /// calls fail with (set by the VM layer, which can see more).
    explainer: std::sync::OnceLock<Explainer>,
    /// Says why the agent went silent (set by the VM layer).
    stall_explainer: std::sync::OnceLock<StallExplainer>,
    /// Gets a new connection after the agent's op server restarted.
    redial: std::sync::OnceLock<Redial>,
    /// The VM's secret, sent again in the hello to a restarted agent.
    token: proto::SessionToken,
    live: Arc<Liveness>,
}

/// See [`Client::set_explainer`].
pub type Explainer = Box<dyn Fn(&str) -> String + Send + Sync>;

/// See [`Client::set_redial`]: waits (bounded, and not past QEMU's end)
/// for the restarted agent to dial in again, and returns the new stream
/// after the hello exchange; `None` when none came.
pub type Redial = Box<dyn Fn() -> Option<OwnedFd> + Send + Sync>;

/// See [`Client::set_stall_explainer`]: the silence so far → the reason.
pub type StallExplainer = Box<dyn Fn(Duration) -> String + Send + Sync>;

impl Client {
    /// Starts serving an established, handshaken stream (a blocking socket).
    pub fn start(
        stream: OwnedFd,
        hello: proto::AgentHello,
        token: proto::SessionToken,
    ) -> io::Result<Arc<Client>> {
        let writer = FdWriter::dup(stream.as_raw_fd())?;
        let shared = Arc::new(Mutex::new(Shared {
            pending: HashMap::new(),
            closed: None,
            paused: None,
        }));
        let live = Arc::new(Liveness::default());
        live.touch();
        let client = Arc::new(Client {
            writer,
            shared: shared.clone(),
            next_id: AtomicU64::new(1),
            hello,
            token,
            explainer: std::sync::OnceLock::new(),
            stall_explainer: std::sync::OnceLock::new(),
            redial: std::sync::OnceLock::new(),
            live: live.clone(),
        });
        let weak = Arc::downgrade(&client);
        std::thread::Builder::new()
            .name("provium-reader".into())
            .spawn(move || serve_reads(stream, &weak, &shared, &live))?;
        Ok(client)
    }

    /// Sets how a new connection is obtained when the agent's connection
    /// ends while QEMU runs on (see [`Redial`]); only the first call counts.
    pub fn set_redial(&self, f: Redial) {
        let _ = self.redial.set(f);
    }

    /// The agent's op server restarted: the calls in flight were lost
    /// (their replies would have come from the process that ended).
    fn agent_restarted(&self) {
        let mut s = self.lock();
        tracing::debug!(
            in_flight = s.pending.len(),
            "the guest agent's op server restarted"
        );
        for (_, tx) in s.pending.drain() {
            let _ = tx.send(Event::Reply(Err(Failure::other(
                proto::FailureKind::Internal,
                "the guest agent restarted (its op server ended unexpectedly) while this \
                 call was in flight, so its result was lost; the VM carries on, but files, \
                 processes, tails and workers opened before are gone",
            ))));
        }
    }

    /// Answers a restarted agent's hello on the current stream.
    fn send_hello(&self) -> Result<(), TransportError> {
        let frame = proto::encode(&HostMsg::Hello {
            version: proto::PROTOCOL_VERSION,
            token: self.token,
        })?;
        self.send_frame(frame)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Sets how the reader explains the connection's end (see
    /// [`Explainer`]); only the first call counts.
    pub fn set_explainer(&self, f: Explainer) {
        let _ = self.explainer.set(f);
    }

    /// Sets how a stall is explained (see [`StallExplainer`]); only the
    /// first call counts.
    pub fn set_stall_explainer(&self, f: StallExplainer) {
        let _ = self.stall_explainer.set(f);
    }

    /// Sets how long the agent may stay silent while a call waits before
    /// the connection is declared dead (`None`: forever).
    pub fn set_stall_timeout(&self, after: Option<Duration>) {
        self.live.set_stall_after(after);
    }

    /// Why the connection ended, if it has.
    pub fn closed_reason(&self) -> Option<Arc<str>> {
        self.lock().closed.clone()
    }

    /// Ends the connection: every call in flight fails with `reason`.
    pub fn close(&self, reason: &str) {
        fail_all(&self.shared, reason);
        self.writer.shutdown();
    }

    /// While `Some`, new calls fail at once with this message (the VM is
    /// paused: they could only wait).
    pub fn set_paused(&self, message: Option<&str>) {
        self.lock().paused = message.map(Arc::from);
    }

    /// Starts a call; blocks only while the write queue is full.
    pub fn call(&self, op: Op) -> Result<PendingCall, TransportError> {
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let frame = proto::encode(&HostMsg::Call { id, op })?;
        let (tx, rx) = mpsc::channel();
        {
            let mut shared = self.lock();
            if let Some(reason) = &shared.closed {
                return Err(TransportError::Closed(reason.to_string()));
            }
            if let Some(message) = &shared.paused {
                return Err(TransportError::Paused(message.to_string()));
            }
            shared.pending.insert(id, tx);
        }
        if let Err(e) = self.send_frame(frame) {
            self.lock().pending.remove(&id);
            return Err(e);
        }
        Ok(PendingCall { id, rx })
    }

    /// Asks the agent to end a call early (closes a stream); the call's
    /// events are no longer delivered.
    pub fn cancel(&self, id: RequestId) {
        self.lock().pending.remove(&id);
        if let Ok(frame) = proto::encode(&HostMsg::Cancel { id }) {
            let _ = self.send_frame(frame);
        }
    }

    /// Sends upload bytes for a call in flight.
    pub fn send_data(&self, id: RequestId, chunk: &[u8], last: bool) -> Result<(), TransportError> {
        let frame = proto::encode(&HostMsg::Data {
            id,
            chunk: ByteBuf::from(chunk),
            last,
        })?;
        self.send_frame(frame)
    }

    fn send_frame(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        if let Some(reason) = self.closed_reason() {
            return Err(TransportError::Closed(reason.to_string()));
        }
        match self.writer.write_all(&frame, &self.live, None) {
            Ok(()) => Ok(()),
            Err(WriteEnd::Interrupted { clean: true }) => Err(TransportError::Interrupted),
            Err(end) => Err(self.write_failed(end)),
        }
    }

    /// A write that went wrong mid-frame: the stream can no longer be
    /// trusted, so the connection ends with the reason.
    fn write_failed(&self, end: WriteEnd) -> TransportError {
        let raw = match end {
            WriteEnd::Io(e) => format!("write to agent failed: {e}"),
            WriteEnd::Interrupted { .. } => {
                self.close("interrupted (SIGINT) in the middle of sending a frame");
                return TransportError::Interrupted;
            }
            WriteEnd::Stalled(silence) => {
                let reason = self.stall_reason(silence);
                tracing::debug!("stall after {silence:?} of silence: {reason}");
                self.close(&reason);
                return TransportError::Closed(self.reason_or(&reason));
            }
        };
        let reason = match self.explainer.get() {
            Some(explain) if self.closed_reason().is_none() => explain(&raw),
            _ => raw,
        };
        self.close(&reason);
        TransportError::Closed(self.reason_or(&reason))
    }

    fn stall_reason(&self, silence: Duration) -> String {
        match self.stall_explainer.get() {
            Some(explain) => explain(silence),
            None => format!(
                "the agent has not answered for {:.0} s",
                silence.as_secs_f64()
            ),
        }
    }

    /// Waits for the next event on `rx`, for at most `timeout` (forever when
    /// `None`), while watching for Ctrl-C and for the agent going silent
    /// (pinging it after [`PING_AFTER`], closing the connection at the stall
    /// timeout).
    fn recv(&self, rx: &mpsc::Receiver<Event>, timeout: Option<Duration>) -> Next {
        let start = std::time::Instant::now();
        let deadline = timeout.map(|t| start + t);
        let mut watch: Option<interrupt::Watch> = None;
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            match rx.recv_timeout(slice) {
                Ok(e) => return Next::Event(e),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Next::Closed,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Next::Timeout;
            }
            // Armed only once the call has waited a slice: quick calls
            // never touch the signal disposition.
            if watch.get_or_insert_with(interrupt::Watch::arm).fired() {
                return Next::Interrupted;
            }
            let Some(stall) = self.live.stall_after() else {
                continue;
            };
            if self.lock().paused.is_some() {
                continue;
            }
            let silence = self.live.silence(start);
            if silence >= stall {
                let reason = self.stall_reason(silence);
                tracing::debug!("stall after {silence:?} of silence: {reason}");
                self.close(&reason);
                return Next::Closed;
            }
            if silence >= PING_AFTER && self.live.claim_ping() {
                self.ping();
            }
        }
    }

    /// Sends a `Ping` nobody waits for: its reply is a sign of life. Skipped
    /// when another thread is writing (that write shows life or stalls).
    fn ping(&self) {
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let Ok(frame) = proto::encode(&HostMsg::Call { id, op: Op::Ping }) else {
            return;
        };
        let Some(guard) = self.writer.try_lock() else {
            return;
        };
        match self.writer.write_all(&frame, &self.live, Some(guard)) {
            Ok(()) | Err(WriteEnd::Interrupted { clean: true }) => {}
            Err(end) => {
                let _ = self.write_failed(end);
            }
        }
    }

    fn reason_or(&self, default: &str) -> String {
        self.closed_reason()
            .map(|r| r.to_string())
            .unwrap_or_else(|| default.to_string())
    }

    /// Waits for a call's events, collecting `Data` per channel, and returns
    /// the reply with the collected bytes.
    pub fn wait(&self, call: PendingCall) -> Result<Completed, TransportError> {
        // Chunks are kept as they came and joined once at the end (one copy,
        // into a buffer of the exact size).
        let mut chunks: [Vec<(Vec<u8>, std::ops::Range<usize>)>; 3] = Default::default();
        loop {
            match self.recv(&call.rx, None) {
                Next::Event(Event::Data(ch, body, range)) => {
                    if let Some(list) = chunks.get_mut(ch as usize) {
                        list.push((body, range));
                    }
                }
                Next::Event(Event::Reply(result)) => {
                    let channels = chunks.map(|list| {
                        let total = list.iter().map(|(_, r)| r.len()).sum();
                        let mut out = Vec::with_capacity(total);
                        for (body, range) in list {
                            out.extend_from_slice(&body[range]);
                        }
                        out
                    });
                    return Ok(Completed { result, channels });
                }
                Next::Interrupted => {
                    self.cancel(call.id);
                    return Err(TransportError::Interrupted);
                }
                Next::Closed | Next::Timeout => {
                    return Err(TransportError::Closed(
                        self.reason_or("the agent connection ended"),
                    ))
                }
            }
        }
    }

    /// The next event of a streaming call, waiting at most `timeout`
    /// (forever when `None`; the stall timeout and Ctrl-C still apply).
    pub fn next(&self, call: &PendingCall, timeout: Option<Duration>) -> Next {
        self.recv(&call.rx, timeout)
    }

    /// Convenience: call and wait.
    pub fn roundtrip(&self, op: Op) -> Result<Completed, TransportError> {
        let call = self.call(op)?;
        self.wait(call)
    }
}

/// A call in flight.
pub struct PendingCall {
    /// Its request id (for uploads).
    pub id: RequestId,
    rx: mpsc::Receiver<Event>,
}

/// What waiting for a stream event gave.
pub enum Next {
    /// A `Data` chunk or the final reply of the call.
    Event(Event),
    /// Nothing arrived in time.
    Timeout,
    /// The connection ended (the call will never get its reply).
    Closed,
    /// Ctrl-C (SIGINT) arrived while waiting.
    Interrupted,
}

/// A finished call.
pub struct Completed {
    /// The agent's verdict.
    pub result: Result<Reply, Failure>,
    /// Bytes received as `Data`, by channel.
    pub channels: [Vec<u8>; 3],
}

/// The reader thread: routes frames until the connection ends; then, while
/// QEMU runs on, takes the agent back when its op server restarted (a new
/// hello on the serial port, a new connection over vsock).
fn serve_reads(
    stream: OwnedFd,
    weak: &std::sync::Weak<Client>,
    shared: &Mutex<Shared>,
    live: &Liveness,
) {
    // Buffered: a small frame's header and body arrive in one read.
    let mut rd = std::io::BufReader::with_capacity(READ_BUFFER, std::fs::File::from(stream));
    loop {
        let end = read_loop(&mut rd, shared, live);
        let Some(client) = weak.upgrade() else {
            fail_all(shared, end.reason());
            return;
        };
        if client.closed_reason().is_some() {
            // A deliberate close: nothing to explain or recover.
            return;
        }
        match end {
            ReadEnd::AgentHello => {
                client.agent_restarted();
                if let Err(e) = client.send_hello() {
                    client.close(&format!("the restarted agent could not be answered: {e}"));
                    return;
                }
            }
            ReadEnd::Ended(raw) => {
                if let Some(fd) = client.redial.get().and_then(|redial| redial()) {
                    if client.writer.replace(fd.as_raw_fd()).is_ok() {
                        client.agent_restarted();
                        rd =
                            std::io::BufReader::with_capacity(READ_BUFFER, std::fs::File::from(fd));
                        continue;
                    }
                }
                let reason = match client.explainer.get() {
                    Some(explain) if client.closed_reason().is_none() => explain(&raw),
                    _ => raw,
                };
                tracing::debug!("the agent connection ended: {reason}");
                client.close(&reason);
                return;
            }
        }
    }
}
