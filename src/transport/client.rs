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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::{self as proto, AgentMsg, Failure, HostMsg, Op, Reply, RequestId};
use serde_bytes::ByteBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::liveness::{Liveness, PING_AFTER, WAIT_SLICE};
use super::TransportError;
use crate::interrupt;

/// Read buffer of the connection: small frames (and their headers) arrive in
/// one read; bulk chunks, being larger, are read straight into their own
/// buffer instead of through this one.
const READ_BUFFER: usize = 64 * 1024;

/// What a call receives from the agent.
#[derive(Debug)]
pub enum Event {
    /// Bulk bytes on a channel, before the reply: `body[range]` (the frame
    /// body is passed on whole, so the bytes are not copied out of it).
    Data(u8, Vec<u8>, std::ops::Range<usize>),
    /// The final answer.
    Reply(Result<Reply, Failure>),
}

struct Shared {
    pending: HashMap<RequestId, mpsc::Sender<Event>>,
    /// Why the connection ended, once it has.
    closed: Option<Arc<str>>,
    /// Set while the VM is paused: new calls fail with it at once.
    paused: Option<Arc<str>>,
}

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

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A poisoned lock only means another thread panicked while holding it; the
    // map itself is still consistent (every operation on it is one step).
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn fail_all(shared: &Mutex<Shared>, reason: &str) {
    let mut s = lock(shared);
    if s.closed.is_none() {
        s.closed = Some(Arc::from(reason));
    }
    s.pending.clear();
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

/// How a connection's stream of frames ended.
enum ReadEnd {
    /// The agent said hello again: its op server restarted (same stream).
    AgentHello,
    /// The stream ended or broke, for this reason.
    Ended(String),
}

impl ReadEnd {
    fn reason(&self) -> &str {
        match self {
            ReadEnd::AgentHello => "the guest agent restarted",
            ReadEnd::Ended(r) => r,
        }
    }
}

fn read_loop<R: std::io::Read>(rd: &mut R, shared: &Mutex<Shared>, live: &Liveness) -> ReadEnd {
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

/// Why a write ended early.
enum WriteEnd {
    Io(io::Error),
    /// Ctrl-C; `clean` when no byte of the frame had been sent.
    Interrupted {
        clean: bool,
    },
    /// The peer took nothing for this long.
    Stalled(Duration),
}

/// The write side: a duplicate of the socket's descriptor, written under a
/// mutex so that frames never interleave. Shutting down does not take the
/// mutex, so it also wakes a writer blocked on a full socket.
struct FdWriter {
    lock: Mutex<()>,
    /// The socket written to (changes when the agent reconnects).
    raw: std::sync::atomic::AtomicI32,
    /// Every descriptor used so far, kept open while the writer lives so
    /// that `raw` never names a number reused by someone else.
    owned: Mutex<Vec<OwnedFd>>,
    shut: std::sync::atomic::AtomicBool,
}

/// A close-on-exec duplicate of `fd`.
fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we are handed; the
    // result is a new descriptor that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

impl FdWriter {
    fn dup(fd: RawFd) -> io::Result<FdWriter> {
        let fd = dup_fd(fd)?;
        Ok(FdWriter {
            lock: Mutex::new(()),
            raw: std::sync::atomic::AtomicI32::new(fd.as_raw_fd()),
            owned: Mutex::new(vec![fd]),
            shut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Writes to a duplicate of `fd` from now on (a new connection).
    fn replace(&self, fd: RawFd) -> io::Result<()> {
        let fd = dup_fd(fd)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.raw.store(fd.as_raw_fd(), Ordering::Release);
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fd);
        Ok(())
    }

    /// The write lock, if nobody holds it.
    fn try_lock(&self) -> Option<MutexGuard<'_, ()>> {
        self.lock.try_lock().ok()
    }

    /// Writes a whole frame under the write lock (`held`, or taken here).
    /// Never blocks in the kernel: a full socket is polled in slices, so a
    /// frozen peer ends the write at the stall timeout and Ctrl-C ends it at
    /// once (cleanly if no byte of the frame was sent yet).
    fn write_all(
        &self,
        mut buf: &[u8],
        live: &Liveness,
        held: Option<MutexGuard<'_, ()>>,
    ) -> Result<(), WriteEnd> {
        let _guard = held.unwrap_or_else(|| self.lock.lock().unwrap_or_else(|e| e.into_inner()));
        let fd = self.raw.load(Ordering::Acquire);
        let whole = buf.len();
        let mut blocked_since: Option<std::time::Instant> = None;
        let mut watch: Option<interrupt::Watch> = None;
        while !buf.is_empty() {
            if self.shut.load(Ordering::Acquire) {
                return Err(WriteEnd::Io(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "connection closed",
                )));
            }
            // send(MSG_NOSIGNAL), not write: a peer that is gone (the vsock
            // daemon killed, say) must give EPIPE, not a SIGPIPE that would
            // kill the Lua interpreter hosting the rock.
            // SAFETY: sends from a valid slice on a socket we own.
            let n = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                buf = &buf[n as usize..];
                // Room appearing in a socket that was full means the peer
                // is reading: a sign of life (a long upload gets no replies).
                // A send into free buffer space says nothing about the peer.
                if blocked_since.take().is_some() {
                    live.touch();
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let since = *blocked_since.get_or_insert_with(std::time::Instant::now);
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, WAIT_SLICE.as_millis() as i32) };
                    if watch.get_or_insert_with(interrupt::Watch::arm).fired() {
                        return Err(WriteEnd::Interrupted {
                            clean: buf.len() == whole,
                        });
                    }
                    if let Some(stall) = live.stall_after() {
                        let silence = live.silence(since);
                        if silence >= stall {
                            return Err(WriteEnd::Stalled(silence));
                        }
                    }
                }
                _ => return Err(WriteEnd::Io(err)),
            }
        }
        Ok(())
    }

    /// Shuts the socket down both ways: the reader sees the end, a blocked
    /// writer wakes up with an error, later writes fail.
    fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on a descriptor we own (it stays open until the
        // writer is dropped, so the number cannot be reused meanwhile).
        unsafe { libc::shutdown(self.raw.load(Ordering::Acquire), libc::SHUT_RDWR) };
    }
}
