//! The captured output of a `RunAsync` process.
//!
//! Two pump threads (one per pipe) append what they read as immutable
//! chunks; the whole output is kept until the handle is closed, so a
//! stream can replay it from byte 0 at any time and `ProcWait` can return
//! all of it. Chunks are reference-counted, so readers take them out under
//! the lock without copying bytes and send them after releasing it (a slow
//! host never stalls the pumps, hence never the process).

use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use provium_protocol::{RequestId, CHUNK_LEN};

use crate::sender::Sender;
use crate::trigger::Trigger;

/// Size of a pump's read buffer (below musl's mmap threshold).
const PUMP_BUFFER: usize = 64 * 1024;

/// Chunks at least this large are sent as they are; smaller neighbours are
/// joined into one `Data` frame.
const JOIN_BELOW: usize = 16 * 1024;

/// A piece of output.
pub type Chunk = Arc<[u8]>;

/// Output of one process: index 0 is stdout, 1 is stderr.
pub struct Output {
    state: Mutex<OutState>,
    changed: Condvar,
}

struct OutState {
    chunks: [Vec<Chunk>; 2],
    /// Pipes not yet at end of file.
    open: [bool; 2],
    /// The handle was closed: drop further output, end streams.
    closed: bool,
}

/// What a reader gets from [`Output::next`].
pub enum Next {
    /// New chunks after the ones already seen.
    Chunks(Vec<Chunk>),
    /// The pipe reached end of file and every chunk was handed out.
    Eof,
    /// The reader was cancelled or the handle closed.
    Stop,
}

impl Output {
    /// Empty output with both pipes open.
    pub fn new() -> Arc<Output> {
        Arc::new(Output {
            state: Mutex::new(OutState {
                chunks: [Vec::new(), Vec::new()],
                open: [true, true],
                closed: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, OutState>) -> MutexGuard<'a, OutState> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Appends bytes read from pipe `index`.
    pub fn push(&self, index: usize, bytes: &[u8]) {
        let chunk: Chunk = Arc::from(bytes);
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.chunks[index].push(chunk);
        self.changed.notify_all();
    }

    /// Marks pipe `index` at end of file.
    pub fn finish(&self, index: usize) {
        self.lock().open[index] = false;
        self.changed.notify_all();
    }

    /// The handle was closed: frees the output, ends the streams.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.chunks = [Vec::new(), Vec::new()];
        self.changed.notify_all();
    }

    /// Wakes every waiting reader (they re-check their cancel triggers).
    pub fn wake(&self) {
        let _st = self.lock();
        self.changed.notify_all();
    }

    /// A waker for a reader's cancel trigger.
    pub fn waker(self: &Arc<Self>) -> crate::trigger::Waker {
        let weak: Weak<Output> = Arc::downgrade(self);
        Box::new(move || {
            if let Some(out) = weak.upgrade() {
                out.wake();
            }
        })
    }

    /// Waits until both pipes reached end of file (true) or `deadline`
    /// passed (false).
    pub fn wait_eof(&self, deadline: Option<Instant>) -> bool {
        let st = self.lock();
        crate::deadline::wait_while(&self.changed, st, deadline, |st| st.open.iter().any(|&o| o)).1
    }

    /// Every chunk of pipe `index` so far.
    pub fn all(&self, index: usize) -> Vec<Chunk> {
        self.lock().chunks[index].clone()
    }

    /// The chunks of pipe `index` after the first `seen`, waiting for some
    /// when there are none yet.
    pub fn next(&self, index: usize, seen: usize, cancel: &Trigger) -> Next {
        let mut st = self.lock();
        loop {
            if cancel.fired() || st.closed {
                return Next::Stop;
            }
            if let Some(new) = st.chunks[index].get(seen..).filter(|c| !c.is_empty()) {
                return Next::Chunks(new.to_vec());
            }
            if !st.open[index] {
                return Next::Eof;
            }
            st = self.wait(st);
        }
    }
}

/// Reads `pipe` to end of file into `output` (a pump thread's body).
pub fn pump<R: Read>(mut pipe: R, index: usize, output: &Output) {
    let mut buf = vec![0u8; PUMP_BUFFER];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output.push(index, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    output.finish(index);
}

/// Total bytes of some chunks.
pub fn total(chunks: &[Chunk]) -> usize {
    chunks.iter().map(|c| c.len()).sum()
}

/// Sends chunks as `Data` on `channel`: large ones as they are, runs of
/// small ones joined (in `scratch`) into frames of at most [`CHUNK_LEN`].
pub fn send_chunks(
    sender: &Sender,
    id: RequestId,
    channel: u8,
    chunks: &[Chunk],
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    scratch.clear();
    for chunk in chunks {
        if chunk.len() >= JOIN_BELOW {
            if !scratch.is_empty() {
                sender.data(id, channel, scratch)?;
                scratch.clear();
            }
            for piece in chunk.chunks(CHUNK_LEN) {
                sender.data(id, channel, piece)?;
            }
            continue;
        }
        if scratch.len() + chunk.len() > CHUNK_LEN {
            sender.data(id, channel, scratch)?;
            scratch.clear();
        }
        scratch.extend_from_slice(chunk);
    }
    if !scratch.is_empty() {
        sender.data(id, channel, scratch)?;
        scratch.clear();
    }
    Ok(())
}

/// Joins chunks into one buffer.
pub fn concat(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(total(chunks));
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}
