//! Workers: separate agent processes with their own credentials and
//! namespaces, driven by this agent on the host's behalf.
//!
//! A worker is this same binary re-executed as `provium-agent --worker-fd N`
//! ([`spawn`]), serving the ordinary protocol on
//! one end of a socket pair, with its own handle table. This agent is a
//! client of that connection ([`link`]): it does the handshake at spawn
//! time, forwards `InWorker` ops as calls under request ids of its own,
//! and one reader thread per worker relays every `Data` frame and the final
//! reply back to the host call they belong to (so streams, uploads and
//! large outputs work through workers exactly as they do directly).
//!
//! [`child`] is that other side: the worker process's own main.
//!
//! `libc` errno constants appear here only as the numbers sent to the host.

pub mod child;
pub mod link;
pub mod spawn;

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::Signal;

use provium_protocol::{
    check_version, decode, AgentHello, Failure, HandleId, Op, Reply, RequestId, WorkerSpec,
    PROTOCOL_VERSION,
};

use crate::error::{internal, io_failure, OpResult};
use crate::frames::FrameReader;
use crate::handles::{self, Resource};
use crate::inflight::{InFlight, RelayPeer};
use crate::sender::Sender;
use crate::sys::{self, WaitStatus};
use link::Link;
pub use spawn::set_program;

/// How long a new worker has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// A worker of the handle table.
pub struct Worker {
    pid: i32,
    link: Arc<Link>,
    /// Set once reaped: the pid may name another process from then on.
    reaped: Mutex<bool>,
}

impl Worker {
    fn reaped(&self) -> MutexGuard<'_, bool> {
        self.reaped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forwards a host call (`op` encoded); its `Data` and reply come back
    /// under `host`.
    pub fn forward(
        self: &Arc<Self>,
        sender: &Sender,
        host: RequestId,
        op: &[u8],
        inflight: &InFlight,
    ) -> Result<(), Failure> {
        self.link.forward(self, sender, host, op, inflight)
    }

    /// Signals the worker process (gone is no error).
    fn signal(&self, sig: i32) -> OpResult {
        let reaped = self.reaped();
        if !*reaped {
            sys::kill(self.pid, sig).map_err(|e| io_failure(&e))?;
        }
        Ok(Reply::Unit)
    }

    /// Ends the channel and reaps the worker → its exit code or 128+signal.
    /// The exit is awaited without the lock `signal` takes (a stopped
    /// worker must not stall the connection's reader thread); it is reaped
    /// under it, so a signal never reaches a recycled pid.
    fn join(&self) -> Result<i32, Failure> {
        self.link.shutdown();
        if !*self.reaped() {
            let _ = crate::ops::run::wait_exit(self.pid, None);
        }
        let mut reaped = self.reaped();
        if *reaped {
            return Err(Failure::os(libc::ECHILD, "the worker was already joined"));
        }
        let status = sys::wait_pid(self.pid).map_err(|e| io_failure(&e))?;
        *reaped = true;
        Ok(match status {
            WaitStatus::Exited(code) => code,
            WaitStatus::Signalled(sig) => 128 + sig,
        })
    }
}

/// `Op::SpawnWorker` → [`Reply::Handle`].
pub fn spawn_worker(spec: &WorkerSpec) -> OpResult {
    let (pid, stream) = spawn::start(spec)?;
    let reader = match handshake(&stream) {
        Ok(reader) => reader,
        Err(e) => {
            drop(stream);
            abandon(pid);
            return Err(e);
        }
    };
    // On failure the channel is already closed (dropped with the link).
    let link = Link::start(stream, reader).map_err(|e| {
        abandon(pid);
        internal(format!("cannot start the worker's reader: {e}"))
    })?;
    let worker = Worker {
        pid,
        link,
        reaped: Mutex::new(false),
    };
    Ok(Reply::Handle(handles::insert(Arc::new(worker))))
}

/// Kills and reaps a worker that could not be set up.
fn abandon(pid: i32) {
    let _ = sys::kill(pid, Signal::KILL.as_raw());
    let _ = sys::wait_pid(pid);
}

/// Reads the worker's hello and answers it; returns the reader (which may
/// already hold later bytes).
fn handshake(stream: &UnixStream) -> Result<FrameReader<UnixStream>, Failure> {
    let fail = |what: String| internal(format!("spawn_worker: handshake: {what}"));
    let read_half = stream.try_clone().map_err(|e| io_failure(&e))?;
    read_half
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| io_failure(&e))?;
    let mut reader = FrameReader::new(read_half);
    let hello = match reader.next_frame() {
        // `AgentMsg::Hello` is variant 0: decode only the hello itself.
        Ok(Some([0, hello @ ..])) => {
            decode::<AgentHello>(hello).map_err(|e| fail(e.to_string()))?
        }
        Ok(Some(_)) => return Err(fail("the worker did not start with a hello".into())),
        Ok(None) => return Err(fail("the worker closed its channel".into())),
        Err(e) => return Err(fail(e.to_string())),
    };
    check_version(hello.version).map_err(|v| {
        fail(format!(
            "the worker speaks protocol version {v}, this agent {PROTOCOL_VERSION}"
        ))
    })?;
    let frame = link::hello_frame(PROTOCOL_VERSION);
    std::io::Write::write_all(&mut &*stream, &frame).map_err(|e| fail(e.to_string()))?;
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| io_failure(&e))?;
    Ok(reader)
}

/// `Op::WorkerSignal`.
pub fn signal(id: HandleId, sig: i32) -> OpResult {
    handles::get::<Worker>(id, "worker_signal")?.signal(sig)
}

/// `Op::WorkerJoin` → [`Reply::Exit`]; the handle is gone afterwards.
pub fn join(id: HandleId) -> OpResult {
    let worker = handles::remove_kind::<Worker>(id, "worker_join")?;
    worker.join().map(Reply::Exit)
}

/// Closes a worker handle already removed from the table: SIGTERM, join.
pub fn close(worker: &Worker) -> OpResult {
    // A failed signal (the worker runs as another user) still ends in a
    // join: closing the channel makes a worker exit.
    let _ = worker.signal(Signal::TERM.as_raw());
    worker.join().map(|_| Reply::Unit)
}

impl Resource for Worker {
    const KIND: &'static str = "a worker";

    fn close(&self) -> OpResult {
        close(self)
    }
}

impl RelayPeer for Worker {
    fn data(&self, inner: RequestId, chunk: &[u8], last: bool) {
        self.link.data(inner, chunk, last);
    }

    fn cancel(&self, inner: RequestId) {
        self.link.cancel(inner);
    }
}

/// Runs `op` in worker `id` for host call `host`; `frame` is the body of
/// the host's frame, whose encoded op is relayed as it is. Replies (or
/// `Data`) come later from the worker's reader thread.
pub fn in_worker(
    sender: &Sender,
    host: RequestId,
    id: HandleId,
    op: &Op,
    frame: &[u8],
    inflight: &InFlight,
) -> Result<(), Failure> {
    if matches!(op, Op::Poweroff) {
        return Err(crate::error::bad_request(
            "in_worker: Poweroff cannot run in a worker",
        ));
    }
    let worker = handles::get::<Worker>(id, "in_worker")?;
    let raw = link::inner_op(frame).ok_or_else(|| internal("in_worker: cannot find the op"))?;
    worker.forward(sender, host, raw, inflight)
}
