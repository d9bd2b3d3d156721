//! Processes started by `RunAsync` and the operations on them.
//!
//! A process is spawned like `Run`'s (own process group, PATH lookup,
//! environment, cwd) but its stdin stays open as a pipe and its output is
//! captured completely by two pooled pump threads into an [`Output`] that
//! lives until the handle is closed (streams replay it from byte 0, before
//! or after the wait).
//!
//! * **wait** (one-shot): waits on a pidfd, kills the group at the timeout,
//!   waits for the pipes like `Run`, reaps, and replies like `Run` (output
//!   that does not fit in one chunk comes as `Data` first). The leader is
//!   reaped under the state lock, and signals are only sent before that, so
//!   a signal never reaches a recycled pid.
//! * **stdin**: the write end is non-blocking; a write waits in `poll` for
//!   room (or for stdin to be closed) and then writes once, so it may be
//!   short. Writers take turns, the initial `spec.stdin` bytes first.
//! * **close**: an unwaited process gets SIGTERM (its group), 2 s to exit,
//!   then SIGKILL (its group); it is reaped and its output freed.
//!
//! `libc` errno constants appear here only as the numbers sent to the host.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::process::Signal;

use provium_protocol::{
    ExitStatus, Failure, HandleId, Reply, RequestId, RunOutcome, RunSpec, CHUNK_LEN, CH_STDERR,
    CH_STDOUT,
};
use serde_bytes::ByteBuf;

use super::output::{self, Next, Output};
use super::run::{self, KILL_GRACE};
use super::spawn_thread;
use crate::error::{bad_request, internal, io_failure, OpResult};
use crate::handles::{self, Resource};
use crate::sender::Sender;
use crate::sys;
use crate::trigger::Trigger;

/// How long `Close` lets an unwaited process handle SIGTERM.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A process of the handle table.
pub struct Process {
    pid: i32,
    state: Mutex<ProcState>,
    stdin: Stdin,
    output: Arc<Output>,
}

struct ProcState {
    child: Child,
    /// A wait (or a close) has claimed the exit status.
    waited: bool,
    /// The leader was reaped: its pid may name another process now.
    reaped: bool,
}

/// The write end of a process's stdin, shared by writers in turn.
struct Stdin {
    state: Mutex<StdinState>,
    idle: Condvar,
    closed: Trigger,
}

struct StdinState {
    /// Absent while a writer holds it, and once closed.
    fd: Option<OwnedFd>,
    busy: bool,
}

impl Stdin {
    fn lock(&self) -> MutexGuard<'_, StdinState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_failure(id: HandleId) -> Failure {
        Failure::os(libc::EBADF, format!("the stdin of {id} is closed"))
    }

    /// Waits for this writer's turn and takes the descriptor.
    fn begin(&self, id: HandleId) -> Result<OwnedFd, Failure> {
        let mut st = self.lock();
        while st.busy {
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        match st.fd.take() {
            Some(fd) if !self.closed.fired() => {
                st.busy = true;
                Ok(fd)
            }
            _ => Err(Self::closed_failure(id)),
        }
    }

    /// Gives the descriptor back (or closes it if stdin was closed meanwhile).
    fn end(&self, fd: OwnedFd) {
        let mut st = self.lock();
        st.busy = false;
        if !self.closed.fired() {
            st.fd = Some(fd);
        }
        self.idle.notify_all();
    }

    /// One write once the pipe has room; may be short.
    fn write_some(&self, fd: &OwnedFd, data: &[u8], id: HandleId) -> Result<usize, Failure> {
        if data.is_empty() {
            return Ok(0);
        }
        let closed = self.closed.fd().map_err(|e| io_failure(&e))?;
        let mut fds = [
            PollFd::new(fd, PollFlags::OUT),
            PollFd::from_borrowed_fd(closed, PollFlags::IN),
        ];
        loop {
            if self.closed.fired() {
                return Err(Self::closed_failure(id));
            }
            if sys::poll(&mut fds, None).map_err(|e| io_failure(&e))? == 0
                || !sys::has_events(&fds[0])
            {
                continue;
            }
            match sys::write(fd, data) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_failure(&e)),
            }
        }
    }

    /// Closes stdin (idempotent); a writer waiting for room wakes up.
    fn close(&self) {
        self.closed.fire();
        let mut st = self.lock();
        st.fd = None;
        self.idle.notify_all();
    }
}

impl Process {
    fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the exit status; false when a wait or close already did.
    fn claim(&self) -> bool {
        let mut st = self.lock();
        !std::mem::replace(&mut st.waited, true)
    }

    /// Reaps the leader. Its exit is awaited first without the state lock,
    /// which inline ops take on the connection's reader thread: a process
    /// slow to die (SIGKILL does not end uninterruptible sleep) must not
    /// stall the connection. Only the claimer reaps, so the pid stays ours
    /// until then.
    fn reap(&self) -> Result<ExitStatus, Failure> {
        let _ = run::wait_exit(self.pid, None);
        let mut st = self.lock();
        let status = st.child.wait().map_err(|e| io_failure(&e))?;
        st.reaped = true;
        if let Some(code) = status.code() {
            Ok(ExitStatus::Exited(code))
        } else if let Some(sig) = status.signal() {
            Ok(ExitStatus::Signalled(sig))
        } else {
            Err(internal(format!(
                "pid {} ended in an unknown way: {status}",
                self.pid
            )))
        }
    }

    /// Kills the group and reaps (after an internal error).
    fn abandon(&self) {
        sys::kill_group(self.pid, Signal::KILL);
        let _ = self.reap();
    }

    /// Waits for the exit (killing the group at `deadline`) and for the
    /// output pipes, then reaps.
    fn finish(&self, deadline: Option<Instant>) -> Result<ExitStatus, Failure> {
        let timed_out = match run::wait_exit(self.pid, deadline) {
            Ok(timed_out) => timed_out,
            Err(e) => {
                self.abandon();
                return Err(internal(format!("waiting for pid {}: {e}", self.pid)));
            }
        };
        if timed_out {
            self.output.wait_eof(Some(Instant::now() + KILL_GRACE));
        } else if !self.output.wait_eof(deadline) {
            // Exited, but something outside the group still holds the
            // pipes past the deadline (see `run`).
            sys::kill_group(self.pid, Signal::KILL);
            self.output.wait_eof(Some(Instant::now() + KILL_GRACE));
        }
        let status = self.reap()?;
        self.stdin.close();
        Ok(if timed_out {
            ExitStatus::TimedOut
        } else {
            status
        })
    }

    /// Waits until the process has exited, or `cancel` fires.
    fn wait_exited(&self, cancel: &Trigger) {
        let pidfd = {
            let st = self.lock();
            if st.reaped {
                return;
            }
            // Not reaped while we hold the lock: the pid is still ours.
            match sys::pidfd_open(self.pid) {
                Ok(fd) => fd,
                Err(_) => return,
            }
        };
        let Ok(cancel_fd) = cancel.fd() else { return };
        let mut fds = [
            PollFd::new(&pidfd, PollFlags::IN),
            PollFd::from_borrowed_fd(cancel_fd, PollFlags::IN),
        ];
        while !cancel.fired() {
            match sys::poll(&mut fds, None) {
                Ok(_) if sys::has_events(&fds[0]) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// `Op::RunAsync` → [`Reply::Process`].
pub fn run_async(spec: RunSpec) -> OpResult {
    if spec.stdin_more {
        return Err(bad_request(
            "run_async: `stdin_more` is not supported; write to stdin with ProcStdin",
        ));
    }
    if spec.timeout_ms.is_some() {
        return Err(bad_request(
            "run_async: `timeout_ms` is not honoured here; pass it to ProcWait",
        ));
    }
    crate::prereq::await_run_prerequisite();
    let mut cmd = run::command(&spec, true)?;
    let mut child = cmd.spawn().map_err(|e| io_failure(&e))?;
    let pid = child.id() as i32;
    let stdin = child.stdin.take().map(OwnedFd::from);
    let pipes = (child.stdout.take(), child.stderr.take());
    let initial = spec.stdin.into_vec();
    let busy = stdin.is_some() && !initial.is_empty();
    let process = Arc::new(Process {
        pid,
        state: Mutex::new(ProcState {
            child,
            waited: false,
            reaped: false,
        }),
        stdin: Stdin {
            state: Mutex::new(StdinState {
                fd: None, // set by `start`
                busy,
            }),
            idle: Condvar::new(),
            closed: Trigger::new(),
        },
        output: Output::new(),
    });
    if let Err(e) = start(&process, stdin, pipes, initial, busy) {
        process.abandon();
        return Err(internal(format!("cannot start process threads: {e}")));
    }
    let handle = handles::insert(process);
    Ok(Reply::Process {
        handle,
        pid: pid as u32,
    })
}

/// Sets stdin up and starts the pumps (and the initial stdin writer).
fn start(
    process: &Arc<Process>,
    stdin: Option<OwnedFd>,
    (stdout, stderr): (
        Option<std::process::ChildStdout>,
        Option<std::process::ChildStderr>,
    ),
    initial: Vec<u8>,
    busy: bool,
) -> std::io::Result<()> {
    if let Some(fd) = stdin {
        sys::set_nonblocking(fd.as_fd())?;
        if busy {
            let p = Arc::clone(process);
            spawn_thread("proc-stdin", move || write_initial(&p, fd, &initial))?;
        } else {
            process.stdin.lock().fd = Some(fd);
        }
    }
    let out = &process.output;
    match stdout {
        Some(pipe) => {
            let o = Arc::clone(out);
            spawn_thread("proc-stdout", move || output::pump(pipe, 0, &o))?;
        }
        None => out.finish(0),
    }
    match stderr {
        Some(pipe) => {
            let o = Arc::clone(out);
            spawn_thread("proc-stderr", move || output::pump(pipe, 1, &o))?;
        }
        None => out.finish(1),
    }
    Ok(())
}

/// Writes the spec's stdin bytes (the first writer's turn is reserved).
fn write_initial(process: &Process, fd: OwnedFd, mut data: &[u8]) {
    let id = HandleId(0);
    while !data.is_empty() {
        match process.stdin.write_some(&fd, data, id) {
            Ok(n) => data = &data[n..],
            Err(_) => break,
        }
    }
    process.stdin.end(fd);
}

/// `Op::ProcWait` → [`Reply::Run`], with large output as `Data` first.
pub fn wait(sender: &Sender, req: RequestId, id: HandleId, timeout_ms: Option<u64>) -> OpResult {
    let process = handles::get::<Process>(id, "wait")?;
    if !process.claim() {
        return Err(Failure::os(
            libc::EBADF,
            format!("{id} already waited on (wait is one-shot)"),
        ));
    }
    let deadline = timeout_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
    let status = process.finish(deadline)?;
    let out = process.output.all(0);
    let err = process.output.all(1);
    if output::total(&out) + output::total(&err) <= CHUNK_LEN {
        return Ok(Reply::Run(RunOutcome {
            status,
            stdout: ByteBuf::from(output::concat(&out)),
            stderr: ByteBuf::from(output::concat(&err)),
        }));
    }
    let mut scratch = Vec::new();
    output::send_chunks(sender, req, CH_STDOUT, &out, &mut scratch)
        .and_then(|()| output::send_chunks(sender, req, CH_STDERR, &err, &mut scratch))
        .map_err(|e| internal(format!("connection lost: {e}")))?;
    Ok(Reply::Run(RunOutcome {
        status,
        stdout: ByteBuf::new(),
        stderr: ByteBuf::new(),
    }))
}

/// `Op::ProcSignal`: signals the process, or its process group (the
/// process leads its own group: `sh -c` and what it started); a process
/// that is gone (or reaped) is no error. Until the process is reaped its
/// pid, and so its group id, stays ours.
pub fn signal(id: HandleId, sig: i32, group: bool) -> OpResult {
    let process = handles::get::<Process>(id, "signal")?;
    let st = process.lock();
    if !st.reaped {
        let target = if group { -process.pid } else { process.pid };
        sys::kill(target, sig).map_err(|e| io_failure(&e))?;
    }
    Ok(Reply::Unit)
}

/// `Op::ProcStatus`, without reaping.
pub fn status(id: HandleId) -> OpResult {
    let process = handles::get::<Process>(id, "status")?;
    let st = process.lock();
    let running = !st.reaped && !sys::has_exited(process.pid).map_err(|e| io_failure(&e))?;
    Ok(Reply::ProcStatus { running })
}

/// `Op::ProcStdin` → [`Reply::Count`] (one write, may be short).
pub fn stdin_write(id: HandleId, data: &[u8]) -> OpResult {
    let process = handles::get::<Process>(id, "stdin_write")?;
    let fd = process.stdin.begin(id)?;
    let written = process.stdin.write_some(&fd, data, id);
    process.stdin.end(fd);
    written.map(|n| Reply::Count(n as u64))
}

/// `Op::ProcCloseStdin` (idempotent).
pub fn close_stdin(id: HandleId) -> OpResult {
    handles::get::<Process>(id, "close_stdin")?.stdin.close();
    Ok(Reply::Unit)
}

/// Closes a process handle already removed from the table.
pub fn close(process: &Process) -> OpResult {
    if process.claim() {
        sys::kill_group(process.pid, Signal::TERM);
        let deadline = Instant::now() + CLOSE_GRACE;
        match run::wait_exit(process.pid, Some(deadline)) {
            Ok(_) => {
                let _ = process.reap();
            }
            Err(_) => process.abandon(),
        }
    }
    process.stdin.close();
    process.output.close();
    Ok(Reply::Unit)
}

impl Resource for Process {
    const KIND: &'static str = "a process";

    fn close(&self) -> OpResult {
        close(self)
    }
}

/// `Stream(Process)`: replays `channel` from byte 0, follows it, and ends
/// once the pipe reached end of file, everything was sent and the process
/// exited (or on cancel, or when the handle is closed).
pub fn stream(
    sender: &Sender,
    req: RequestId,
    id: HandleId,
    channel: u8,
    cancel: &Trigger,
) -> OpResult {
    let index = match channel {
        CH_STDOUT => 0,
        CH_STDERR => 1,
        other => {
            return Err(bad_request(format!(
                "stream: process channel {other} is neither stdout ({CH_STDOUT}) nor stderr ({CH_STDERR})"
            )))
        }
    };
    let process = handles::get::<Process>(id, "stream")?;
    crate::sender::acknowledge_stream(sender, req)?;
    cancel.on_fire(process.output.waker());
    let mut seen = 0;
    let mut scratch = Vec::new();
    loop {
        match process.output.next(index, seen, cancel) {
            Next::Chunks(chunks) => {
                seen += chunks.len();
                output::send_chunks(sender, req, channel, &chunks, &mut scratch)
                    .map_err(|e| internal(format!("connection lost: {e}")))?;
            }
            Next::Eof => break,
            Next::Stop => return Ok(Reply::Unit),
        }
    }
    process.wait_exited(cancel);
    Ok(Reply::Unit)
}
