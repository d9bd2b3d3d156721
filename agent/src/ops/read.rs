//! read_file: streams a file in [`CHUNK_LEN`] pieces (runs on its own thread).
//!
//! A file that fits in one chunk is answered by [`Reply::Bytes`] alone; a
//! larger one sends `Data` frames on [`CH_BODY`] and ends with the last piece
//! in the reply. Only two chunks are ever held, whatever the file's size, and
//! the size reported by `stat` is never trusted (`/proc` files say 0).

use std::fs::File;
use std::io::{self, Read};

use provium_protocol::{Reply, RequestId, CHUNK_LEN, CH_BODY};
use serde_bytes::ByteBuf;

use super::path;
use crate::error::{internal, io_failure, OpResult};
use crate::sender::Sender;

/// Reads the whole file at `p`, streaming it to `sender` under `id`.
pub fn read_file(sender: &Sender, id: RequestId, p: &[u8]) -> OpResult {
    let mut file = File::open(path(p)).map_err(|e| io_failure(&e))?;
    // Small first: large buffers come from mmap in musl, and mapping and
    // unmapping them costs more than a small file's whole round trip under
    // TCG. read_to_end grows the buffer as the file demands.
    let mut pending = Vec::new();
    fill(&mut file, &mut pending).map_err(|e| io_failure(&e))?;
    let mut next = Vec::new();
    // A short chunk means end of file; a full one may be followed by more.
    while pending.len() == CHUNK_LEN {
        next.clear();
        fill(&mut file, &mut next).map_err(|e| io_failure(&e))?;
        if next.is_empty() {
            break;
        }
        sender
            .data(id, CH_BODY, &pending)
            .map_err(|e| internal(format!("connection lost: {e}")))?;
        std::mem::swap(&mut pending, &mut next);
    }
    Ok(Reply::Bytes(ByteBuf::from(pending)))
}

/// Reads into `buf` (which must be empty) until it holds [`CHUNK_LEN`] bytes
/// or the file ends.
fn fill(file: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
    // read_to_end retries EINTR itself and stops at the limit or at EOF.
    file.take(CHUNK_LEN as u64).read_to_end(buf).map(drop)
}
