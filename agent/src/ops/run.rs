//! run: spawns a program in its own process group, captures its output and
//! enforces the timeout (runs on its own thread).
//!
//! * stdin: the spec's bytes, then (with `stdin_more`) the chunks of the
//!   call's `Data` frames, written by a thread of its own; then closed.
//! * stdout/stderr: read by one thread each into a shared buffer. Whenever
//!   both together exceed [`CHUNK_LEN`] everything buffered is flushed as
//!   `Data` frames on [`CH_STDOUT`]/[`CH_STDERR`]; the rest (at most
//!   `CHUNK_LEN` bytes) travels in the [`RunOutcome`]. Output that fits in
//!   one chunk therefore comes back in the reply alone.
//! * exit: waited for through a pidfd (no polling). The leader stays a zombie
//!   until the output is collected, so its process group id cannot be reused
//!   while we may still signal it.
//! * timeout: SIGKILL to the whole group, [`ExitStatus::TimedOut`], and the
//!   output collected so far; pipes still held open (by processes that left
//!   the group) get only [`KILL_GRACE`] to reach end of file. Without a
//!   timeout the call waits for the pipes' end of file, like a shell's `$(…)`.
//!
//! `libc` errno constants appear here only as the numbers sent to the host.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::process::Signal;

use provium_protocol::{
    ExitStatus, Failure, Reply, RequestId, RunOutcome, RunSpec, CHUNK_LEN, CH_STDERR, CH_STDOUT,
};
use serde_bytes::ByteBuf;

use super::upload::StdinFeed;
use super::{path, spawn_thread};
use crate::error::{bad_request, internal, io_failure, OpResult};
use crate::sender::Sender;
use crate::sys;
use crate::trigger::Trigger;

/// How long output pipes may stay open after the process group was killed.
pub const KILL_GRACE: Duration = Duration::from_millis(250);

/// Poll interval when the kernel has no `pidfd_open` (before Linux 5.3).
const FALLBACK_POLL: Duration = Duration::from_millis(2);

/// Runs `spec` to completion; `feed` carries stdin chunks after `spec.stdin`.
/// The host's `Cancel` (Ctrl-C, a stalled or closed connection) fires
/// `cancel`: the process group is killed and the call ends.
pub fn run(
    sender: &Sender,
    id: RequestId,
    spec: RunSpec,
    feed: Option<StdinFeed>,
    cancel: &Trigger,
) -> OpResult {
    let sender = sender.clone();
    let cap = spec.max_output;
    run_with(spec, feed, Some(cancel), move |pid| Sink::Host {
        sender,
        id,
        cap,
        pid,
    })
}

/// Runs `spec` to completion with all of its output in the reply (inside a
/// batch, where no `Data` may be sent). Output beyond `limit` bytes (both
/// pipes together) fails the call with `EFBIG` once the process ended.
pub fn run_inline(spec: RunSpec, limit: usize) -> OpResult {
    run_with(spec, None, None, |_| Sink::Inline { limit })
}

fn run_with(
    spec: RunSpec,
    feed: Option<StdinFeed>,
    cancel: Option<&Trigger>,
    sink: impl FnOnce(i32) -> Sink,
) -> OpResult {
    crate::prereq::await_run_prerequisite();
    let wants_stdin = !spec.stdin.is_empty() || feed.is_some();
    let mut cmd = command(&spec, wants_stdin)?;
    let mut child = cmd.spawn().map_err(|e| io_failure(&e))?;
    let pid = child.id() as i32;
    let deadline = spec
        .timeout_ms
        .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));

    let collector = Arc::new(Collector::new(sink(pid)));
    if let Err(e) = start_threads(&mut child, spec.stdin.into_vec(), feed, &collector) {
        abandon(&mut child, pid);
        return Err(internal(format!("cannot start a thread: {e}")));
    }

    let waited = match wait_exit_or(pid, deadline, cancel) {
        Ok(w) => w,
        Err(e) => {
            abandon(&mut child, pid);
            return Err(internal(format!("waiting for pid {pid}: {e}")));
        }
    };
    if waited == Waited::Cancelled {
        collector.wait_pipes(Some(Instant::now() + KILL_GRACE));
        let _ = collector.finish();
        let _ = child.wait();
        return Err(Failure::os(
            libc::ECANCELED,
            "run: cancelled by the host, so the process group was killed",
        ));
    }
    let timed_out = waited == Waited::TimedOut;
    if timed_out {
        collector.wait_pipes(Some(Instant::now() + KILL_GRACE));
    } else if !collector.wait_pipes(deadline) {
        // The process exited but something still holds its pipes past the
        // deadline: kill the group (its id is still ours: the leader is a
        // zombie) and give the pipes a short grace.
        sys::kill_group(pid, Signal::KILL);
        collector.wait_pipes(Some(Instant::now() + KILL_GRACE));
    }
    let (stdout, stderr, overflow) = collector.finish();

    let status = child.wait().map_err(|e| io_failure(&e))?;
    let status = if timed_out {
        ExitStatus::TimedOut
    } else if let Some(code) = status.code() {
        ExitStatus::Exited(code)
    } else if let Some(sig) = status.signal() {
        ExitStatus::Signalled(sig)
    } else {
        return Err(internal(format!(
            "pid {pid} ended in an unknown way: {status}"
        )));
    };
    match overflow {
        Some(Overflow::Batch(limit)) => {
            return Err(Failure::os(
                libc::EFBIG,
                format!(
                    "run: the output exceeds the {limit} bytes a batch reply can carry \
                     (the process ended with {status:?}); run it outside a batch"
                ),
            ))
        }
        Some(Overflow::Cap(cap)) => {
            return Err(Failure::os(
                libc::EFBIG,
                format!(
                    "run: the output exceeded the cap of {cap} bytes (opts.max_output), \
                     so the process group was killed"
                ),
            ))
        }
        None => {}
    }
    Ok(Reply::Run(RunOutcome {
        status,
        stdout: ByteBuf::from(stdout),
        stderr: ByteBuf::from(stderr),
    }))
}

/// Builds the command: PATH lookup, environment, cwd, own process group.
pub(crate) fn command(spec: &RunSpec, wants_stdin: bool) -> Result<Command, Failure> {
    if spec.program.is_empty() {
        return Err(bad_request("run: empty program name"));
    }
    let mut cmd = Command::new(OsStr::from_bytes(&spec.program));
    cmd.args(spec.args.iter().map(|a| OsStr::from_bytes(a)));
    if spec.env_clear {
        cmd.env_clear();
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(&b'=') {
            return Err(bad_request(format!(
                "run: bad environment variable name {:?}",
                String::from_utf8_lossy(key)
            )));
        }
        cmd.env(OsStr::from_bytes(key), OsStr::from_bytes(value));
    }
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(path(cwd));
    }
    cmd.process_group(0)
        .stdin(if wants_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cmd)
}

/// Starts the stdin writer and the two output readers.
fn start_threads(
    child: &mut Child,
    stdin_bytes: Vec<u8>,
    feed: Option<StdinFeed>,
    collector: &Arc<Collector>,
) -> std::io::Result<()> {
    if let Some(stdin) = child.stdin.take() {
        spawn_thread("run-stdin", move || feed_stdin(stdin, stdin_bytes, feed))?;
    }
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for (index, pipe) in pipes.into_iter().enumerate() {
        let Some(pipe) = pipe else {
            collector.pipe_closed();
            continue;
        };
        let c = Arc::clone(collector);
        if let Err(e) = spawn_thread("run-output", move || pump(pipe, index, &c)) {
            collector.pipe_closed();
            return Err(e);
        }
    }
    Ok(())
}

/// Kills the process group and reaps the leader (after an internal error).
fn abandon(child: &mut Child, pid: i32) {
    sys::kill_group(pid, Signal::KILL);
    let _ = child.wait();
}

/// Writes the initial stdin bytes, then every fed chunk; closing stdin when
/// the feed ends (last chunk, cancel, or connection gone).
fn feed_stdin(mut stdin: ChildStdin, initial: Vec<u8>, feed: Option<StdinFeed>) {
    if !initial.is_empty() && stdin.write_all(&initial).is_err() {
        return;
    }
    if let Some(feed) = feed {
        for chunk in feed {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
    }
}

/// Reads one output pipe until end of file.
fn pump(mut pipe: Box<dyn Read + Send>, index: usize, collector: &Collector) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => collector.push(index, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    collector.pipe_closed();
}

/// Waits for `pid` to exit without reaping it; at `deadline` kills its
/// group. Returns whether it was killed for the timeout.
pub(crate) fn wait_exit(pid: i32, deadline: Option<Instant>) -> std::io::Result<bool> {
    wait_exit_or(pid, deadline, None).map(|w| w == Waited::TimedOut)
}

/// How waiting for a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Exited,
    /// The deadline passed: the group was killed.
    TimedOut,
    /// `cancel` fired: the group was killed.
    Cancelled,
}

/// [`wait_exit`], also ending (and killing the group) when `cancel` fires.
pub(crate) fn wait_exit_or(
    pid: i32,
    deadline: Option<Instant>,
    cancel: Option<&Trigger>,
) -> std::io::Result<Waited> {
    let pidfd = sys::pidfd_open(pid).ok();
    let cancel_fd = cancel.and_then(|c| c.fd().ok());
    loop {
        if cancel.is_some_and(Trigger::fired) {
            if sys::has_exited(pid)? {
                return Ok(Waited::Exited);
            }
            sys::kill_group(pid, Signal::KILL);
            return Ok(Waited::Cancelled);
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            if sys::has_exited(pid)? {
                return Ok(Waited::Exited);
            }
            sys::kill_group(pid, Signal::KILL);
            return Ok(Waited::TimedOut);
        }
        match &pidfd {
            Some(fd) => {
                // Without a cancel trigger the pidfd stands in for it.
                let mut fds = [
                    PollFd::new(fd, PollFlags::IN),
                    PollFd::from_borrowed_fd(cancel_fd.unwrap_or(fd.as_fd()), PollFlags::IN),
                ];
                if sys::poll(&mut fds, remaining)? > 0 && sys::has_events(&fds[0]) {
                    return Ok(Waited::Exited);
                }
            }
            None => {
                if sys::has_exited(pid)? {
                    return Ok(Waited::Exited);
                }
                let nap = remaining.map_or(FALLBACK_POLL, |r| r.min(FALLBACK_POLL));
                std::thread::sleep(nap);
            }
        }
    }
}

/// The output buffers of one process, shared by its two reader threads and
/// the thread waiting for it.
/// Why output was dropped.
enum Overflow {
    /// More than a batch reply can carry.
    Batch(usize),
    /// More than the call's `max_output`.
    Cap(u64),
}

struct Collector {
    sink: Sink,
    state: Mutex<OutState>,
    changed: Condvar,
}

/// Where output goes.
enum Sink {
    /// Flushed to the host as `Data` whenever more than a chunk is buffered;
    /// past `cap` bytes in all, the process group `pid` is killed.
    Host {
        sender: Sender,
        id: RequestId,
        cap: Option<u64>,
        pid: i32,
    },
    /// Kept for the reply, up to `limit` bytes.
    Inline { limit: usize },
}

struct OutState {
    /// Buffered stdout (0) and stderr (1) not yet sent.
    bufs: [Vec<u8>; 2],
    /// Output pipes not yet at end of file.
    open_pipes: u8,
    /// Once set, output is discarded (the reply is built or the connection
    /// is gone): no `Data` may follow the reply.
    detached: bool,
    /// Inline output went past its limit, or host output past its cap (and
    /// was dropped from then on).
    overflow: bool,
    /// Bytes sent to the host so far.
    sent: u64,
}

const CHANNELS: [u8; 2] = [CH_STDOUT, CH_STDERR];

impl Collector {
    fn new(sink: Sink) -> Collector {
        Collector {
            sink,
            state: Mutex::new(OutState {
                bufs: [Vec::new(), Vec::new()],
                open_pipes: 2,
                detached: false,
                overflow: false,
                sent: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers output; flushes everything as `Data` once the buffers together
    /// exceed one chunk.
    fn push(&self, index: usize, bytes: &[u8]) {
        let mut st = self.lock();
        if st.detached || st.overflow {
            return;
        }
        let (sender, id) = match &self.sink {
            Sink::Host { cap, pid, .. }
                if cap.is_some_and(|c| {
                    st.sent + (st.bufs[0].len() + st.bufs[1].len() + bytes.len()) as u64 > c
                }) =>
            {
                // Past the cap: end the process (its output could be
                // endless) and drop the rest.
                st.overflow = true;
                st.bufs = [Vec::new(), Vec::new()];
                sys::kill_group(*pid, Signal::KILL);
                return;
            }
            Sink::Host { sender, id, .. } => (sender, *id),
            Sink::Inline { limit } => {
                if st.bufs[0].len() + st.bufs[1].len() + bytes.len() > *limit {
                    st.overflow = true;
                    st.bufs = [Vec::new(), Vec::new()];
                } else {
                    st.bufs[index].extend_from_slice(bytes);
                }
                return;
            }
        };
        st.bufs[index].extend_from_slice(bytes);
        if st.bufs[0].len() + st.bufs[1].len() <= CHUNK_LEN {
            return;
        }
        for (i, channel) in CHANNELS.into_iter().enumerate() {
            let buf = std::mem::take(&mut st.bufs[i]);
            for piece in buf.chunks(CHUNK_LEN) {
                if sender.data(id, channel, piece).is_err() {
                    st.detached = true;
                    return;
                }
                st.sent += piece.len() as u64;
            }
        }
    }

    fn pipe_closed(&self) {
        let mut st = self.lock();
        st.open_pipes = st.open_pipes.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Waits until both pipes reached end of file (true) or `deadline` passed.
    fn wait_pipes(&self, deadline: Option<Instant>) -> bool {
        let st = self.lock();
        crate::deadline::wait_while(&self.changed, st, deadline, |st| st.open_pipes > 0).1
    }

    /// Stops collecting and returns what was not sent yet, and the inline
    /// limit when the output went past it.
    fn finish(&self) -> (Vec<u8>, Vec<u8>, Option<Overflow>) {
        let mut st = self.lock();
        st.detached = true;
        let [out, err] = std::mem::take(&mut st.bufs);
        let overflow = match self.sink {
            Sink::Inline { limit } if st.overflow => Some(Overflow::Batch(limit)),
            Sink::Host { cap: Some(cap), .. } if st.overflow => Some(Overflow::Cap(cap)),
            _ => None,
        };
        (out, err, overflow)
    }
}
