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

use tokio::sync::watch;

use super::TransportError;

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
    closed_tx: watch::Sender<bool>,
    /// The agent's hello.
    pub hello: proto::AgentHello,
    /// Turns what the reader saw at the connection's end into the reason
    /// calls fail with (set by the VM layer, which can see more).
    explainer: std::sync::OnceLock<Explainer>,
}

/// See [`Client::set_explainer`].
pub type Explainer = Box<dyn Fn(&str) -> String + Send + Sync>;

impl Client {
    /// Starts serving an established, handshaken stream (a blocking socket).
    pub fn start(stream: OwnedFd, hello: proto::AgentHello) -> io::Result<Arc<Client>> {
        let writer = FdWriter::dup(stream.as_raw_fd())?;
        // Buffered: a small frame's header and body arrive in one read.
        let rd = std::io::BufReader::with_capacity(READ_BUFFER, std::fs::File::from(stream));
        let shared = Arc::new(Mutex::new(Shared {
            pending: HashMap::new(),
            closed: None,
            paused: None,
        }));
        let (closed_tx, _) = watch::channel(false);
        let client = Arc::new(Client {
            writer,
            shared: shared.clone(),
            next_id: AtomicU64::new(1),
            closed_tx,
            hello,
            explainer: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&client);
        std::thread::Builder::new()
            .name("provium-reader".into())
            .spawn(move || {
                let reason = read_loop(rd, &shared);
                if let Some(client) = weak.upgrade() {
                    let reason = match client.explainer.get() {
                        // Not after a deliberate close: nothing to explain.
                        Some(explain) if client.closed_reason().is_none() => explain(&reason),
                        _ => reason,
                    };
                    client.close(&reason);
                } else {
                    fail_all(&shared, &reason);
                }
            })?;
        Ok(client)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Sets how the reader explains the connection's end (see
    /// [`Explainer`]); only the first call counts.
    pub fn set_explainer(&self, f: Explainer) {
        let _ = self.explainer.set(f);
    }

    /// Why the connection ended, if it has.
    pub fn closed_reason(&self) -> Option<Arc<str>> {
        self.lock().closed.clone()
    }

    /// A receiver that turns true once the connection has ended.
    pub fn closed_watch(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    /// Ends the connection: every call in flight fails with `reason`.
    pub fn close(&self, reason: &str) {
        fail_all(&self.shared, reason);
        self.writer.shutdown();
        let _ = self.closed_tx.send(true);
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
        let result = self.writer.write_all(&frame);
        result.map_err(|e| {
            let raw = format!("write to agent failed: {e}");
            let reason = match self.explainer.get() {
                Some(explain) if self.closed_reason().is_none() => explain(&raw),
                _ => raw,
            };
            self.close(&reason);
            TransportError::Closed(self.reason_or(&reason))
        })
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
            match call.rx.recv().ok() {
                Some(Event::Data(ch, body, range)) => {
                    if let Some(list) = chunks.get_mut(ch as usize) {
                        list.push((body, range));
                    }
                }
                Some(Event::Reply(result)) => {
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
                None => {
                    return Err(TransportError::Closed(
                        self.reason_or("the agent connection ended"),
                    ))
                }
            }
        }
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
}

impl PendingCall {
    /// The next event of a streaming call, waiting at most `timeout` (forever
    /// when `None`).
    pub fn next(&self, timeout: Option<Duration>) -> Next {
        let got = match timeout {
            None => self
                .rx
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(t) => self.rx.recv_timeout(t),
        };
        match got {
            Ok(e) => Next::Event(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Next::Timeout,
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }
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

fn read_loop<R: std::io::Read>(mut rd: R, shared: &Mutex<Shared>) -> String {
    use std::io::Read;
    let mut header = [0u8; proto::FRAME_HEADER_LEN];
    loop {
        match rd.read_exact(&mut header) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return "the agent closed the connection".into()
            }
            Err(e) => return format!("read from agent failed: {e}"),
        }
        let len = match proto::frame::body_len(header) {
            Ok(len) => len,
            Err(e) => return format!("bad frame from agent: {e}"),
        };
        // Read into spare capacity: no zeroing of bulk chunks first.
        let mut body = Vec::with_capacity(len);
        match (&mut rd).take(len as u64).read_to_end(&mut body) {
            Ok(n) if n == len => {}
            Ok(n) => {
                return format!("connection to agent lost inside a frame ({n} of {len} bytes)")
            }
            Err(e) => return format!("connection to agent lost inside a frame: {e}"),
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
                Err(e) => return format!("bad frame from agent: {e}"),
            }
        }
        let msg: AgentMsg = match proto::decode(&body) {
            Ok(m) => m,
            Err(e) => return format!("bad frame from agent: {e}"),
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
            AgentMsg::Hello(_) | AgentMsg::HelloRejected { .. } => {
                return "the agent sent a second hello".into()
            }
        }
    }
}

/// The write side: a duplicate of the socket's descriptor, written under a
/// mutex so that frames never interleave. Shutting down does not take the
/// mutex, so it also wakes a writer blocked on a full socket.
struct FdWriter {
    fd: OwnedFd,
    lock: Mutex<()>,
    shut: std::sync::atomic::AtomicBool,
}

impl FdWriter {
    fn dup(fd: RawFd) -> io::Result<FdWriter> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we are handed; the
        // result is a new descriptor that we own.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FdWriter {
            // SAFETY: `new` is a fresh descriptor owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(new) },
            lock: Mutex::new(()),
            shut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let fd = self.fd.as_raw_fd();
        while !buf.is_empty() {
            if self.shut.load(Ordering::Acquire) {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "connection closed",
                ));
            }
            // send(MSG_NOSIGNAL), not write: a peer that is gone (the vsock
            // daemon killed, say) must give EPIPE, not a SIGPIPE that would
            // kill the Lua interpreter hosting the rock.
            // SAFETY: sends from a valid slice on a socket we own.
            let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                buf = &buf[n as usize..];
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1000) };
                }
                _ => return Err(err),
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
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}
