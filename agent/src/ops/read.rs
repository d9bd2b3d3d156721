//! read_file: streams a file in [`CHUNK_LEN`] pieces (runs on its own thread).
//!
//! A file shorter than one chunk is answered by [`Reply::Bytes`] alone; a
//! longer one sends `Data` frames on [`CH_BODY`] and an empty reply. Only one
//! chunk is ever held, whatever the file's size, and the size reported by
//! `stat` is never trusted (`/proc` files say 0).

use std::fs::File;
use std::io::{self, Read};

use provium_protocol::{Reply, RequestId, CHUNK_LEN, CH_BODY, CH_SIZE_HINT};
use serde_bytes::ByteBuf;

use super::path;
use crate::error::{internal, io_failure, OpResult};
use crate::sender::Sender;

/// Reads the whole file at `p`, streaming it to `sender` under `id`.
///
/// A file shorter than one chunk comes back in the reply alone; a longer one
/// is sent chunk by chunk as `Data` and the reply carries no bytes, so the
/// host can join the chunks into one buffer of the exact size.
pub fn read_file(sender: &Sender, id: RequestId, p: &[u8]) -> OpResult {
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
            sender
                .data(id, CH_SIZE_HINT, &meta.len().to_le_bytes())
                .map_err(|e| internal(format!("connection lost: {e}")))?;
        }
    }
    loop {
        sender
            .data(id, CH_BODY, &chunk)
            .map_err(|e| internal(format!("connection lost: {e}")))?;
        chunk.clear();
        fill(&mut file, &mut chunk).map_err(|e| io_failure(&e))?;
        if chunk.is_empty() {
            return Ok(Reply::Bytes(ByteBuf::new()));
        }
    }
}

/// Reads into `buf` (which must be empty) until it holds [`CHUNK_LEN`] bytes
/// or the file ends.
fn fill(file: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
    // read_to_end retries EINTR itself and stops at the limit or at EOF.
    file.take(CHUNK_LEN as u64).read_to_end(buf).map(drop)
}
