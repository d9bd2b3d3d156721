//! read_file: streams a file in [`CHUNK_LEN`] pieces (runs on its own thread).
//!
//! A file shorter than one chunk is answered by [`Reply::Bytes`] alone; a
//! longer one sends `Data` frames on [`CH_BODY`] and an empty reply. Only one
//! chunk is ever held, whatever the file's size, and the size reported by
//! `stat` is never trusted (`/proc` files say 0).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use provium_protocol::{Reply, RequestId, CHUNK_LEN, CH_BODY, CH_SIZE_HINT};
use serde_bytes::ByteBuf;

use super::path;
use crate::error::{internal, io_failure, OpResult};
use crate::sender::Sender;
use crate::trigger::Trigger;

/// How long a long read waits for the host's go after its size hint (a host
/// that does not answer hints still gets its file, late).
const GO_WAIT: Duration = Duration::from_secs(30);

/// Long reads waiting for the host's go, by request id. After the size hint
/// the host prepares the result (a string of that size) and answers with an
/// empty `HostMsg::Data`; streaming only then keeps chunks from queueing up
/// in host memory meanwhile.
#[derive(Clone, Default)]
pub struct Gates(Arc<Mutex<HashMap<RequestId, mpsc::Sender<()>>>>);

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, mpsc::Sender<()>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the gate of `id`; false when no read waits under that id.
    pub fn open(&self, id: RequestId) -> bool {
        match self.lock().remove(&id) {
            Some(tx) => {
                let _ = tx.send(());
                true
            }
            None => false,
        }
    }

    /// Sends the size hint and waits for the go.
    fn hint_and_wait(
        &self,
        sender: &Sender,
        id: RequestId,
        size: u64,
    ) -> Result<(), provium_protocol::Failure> {
        let (tx, rx) = mpsc::channel();
        self.lock().insert(id, tx);
        sender
            .data(id, CH_SIZE_HINT, &size.to_le_bytes())
            .map_err(|e| internal(format!("connection lost: {e}")))?;
        let _ = rx.recv_timeout(GO_WAIT);
        self.lock().remove(&id);
        Ok(())
    }
}

/// Reads the whole file at `p`, streaming it to `sender` under `id`.
///
/// A file shorter than one chunk comes back in the reply alone; a longer one
/// is sent chunk by chunk as `Data` and the reply carries no bytes, so the
/// host can join the chunks into one buffer of the exact size.
///
/// The host may cancel a long read (its size cap was reached, say):
/// `cancel` fires, the read stops before its next chunk.
pub fn read_file(
    sender: &Sender,
    id: RequestId,
    p: &[u8],
    gates: &Gates,
    cancel: &Trigger,
) -> OpResult {
    let mut file = File::open(path(p)).map_err(|e| io_failure(&e))?;
    // Small first: large buffers come from mmap in musl, and mapping and
    // unmapping them costs more than a small file's whole round trip under
    // TCG. read_to_end grows the buffer as the file demands.
    let mut chunk = Vec::new();
    fill(&mut file, &mut chunk).map_err(|e| io_failure(&e))?;
    if chunk.len() < CHUNK_LEN {
        return Ok(Reply::Bytes(ByteBuf::from(chunk)));
    }
    if let Ok(meta) = file.metadata() {
        if meta.len() > 0 {
            gates.hint_and_wait(sender, id, meta.len())?;
        }
    }
    sender
        .data(id, CH_BODY, &chunk)
        .map_err(|e| internal(format!("connection lost: {e}")))?;
    if sender.can_splice() {
        if let Some(done) = splice_rest(sender, id, &file, cancel)? {
            return Ok(done);
        }
    }
    loop {
        if cancel.fired() {
            return Err(internal("read cancelled by the host".to_string()));
        }
        chunk.clear();
        fill(&mut file, &mut chunk).map_err(|e| io_failure(&e))?;
        if chunk.is_empty() {
            return Ok(Reply::Bytes(ByteBuf::new()));
        }
        sender
            .data(id, CH_BODY, &chunk)
            .map_err(|e| internal(format!("connection lost: {e}")))?;
    }
}

/// Sends the rest of `file` spliced through a pipe into the stream, without
/// reading it into memory: under TCG the copy through user space was half
/// of a large read's guest time (64 MiB over serial: QEMU busy 220-260 ms
/// against 110-130 ms for the raw probe). `None` when the file cannot be
/// spliced (its file system has no `splice_read`): the caller reads it.
fn splice_rest(
    sender: &Sender,
    id: RequestId,
    file: &File,
    cancel: &Trigger,
) -> Result<Option<Reply>, provium_protocol::Failure> {
    use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
    let Ok((pipe_r, pipe_w)) = pipe_with(PipeFlags::CLOEXEC) else {
        return Ok(None);
    };
    // A full chunk per frame where the system allows it (else 64 KiB).
    let _ = fcntl_setpipe_size(&pipe_w, CHUNK_LEN);
    let mut first = true;
    loop {
        if cancel.fired() {
            return Err(internal("read cancelled by the host".to_string()));
        }
        let n = match splice(file, None, &pipe_w, None, CHUNK_LEN, SpliceFlags::MOVE) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::INVAL) if first => return Ok(None),
            Err(e) => return Err(io_failure(&e.into())),
        };
        first = false;
        if n == 0 {
            return Ok(Some(Reply::Bytes(ByteBuf::new())));
        }
        sender
            .data_from_pipe(id, CH_BODY, pipe_r.as_fd(), n)
            .map_err(|e| internal(format!("connection lost: {e}")))?;
    }
}

/// Reads into `buf` (which must be empty) until it holds [`CHUNK_LEN`] bytes
/// or the file ends.
fn fill(file: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
    // read_to_end retries EINTR itself and stops at the limit or at EOF.
    file.take(CHUNK_LEN as u64).read_to_end(buf).map(drop)
}
