//! The operations the agent serves, one module per family.
//!
//! Every operation returns an [`OpResult`];
//! [`dispatch`] maps each op to its handler and says whether it may block,
//! and the connection ([`crate::conn`]) runs it inline on the reader thread
//! (cheap, non-blocking ops) or on a pooled thread.

pub mod batch;
pub mod dispatch;
pub mod file;
pub mod fs;
pub mod output;
pub mod process;
pub mod rawcall;
pub mod read;
pub mod run;
pub mod stream;
pub mod upload;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use provium_protocol::HandleId;

use crate::error::OpResult;
use crate::handles::{self, Handle};

/// A wire path (raw bytes) as a filesystem path.
pub fn path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Runs `f` on a pooled thread (see [`crate::pool`]); `what` names the job
/// in the error when no thread can be had (pooled threads are reused, so
/// they carry no per-job name).
pub fn spawn_thread<F>(what: &str, f: F) -> std::io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    crate::pool::execute(Box::new(f))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// `Op::Close` on any handle (may block: a process gets up to
/// [`process::CLOSE_GRACE`] to exit, a worker is joined).
pub fn close(id: HandleId) -> OpResult {
    close_removed(handles::remove(id, "close")?)
}

/// Closes a handle already removed from the table.
pub fn close_removed(handle: Handle) -> OpResult {
    handle.close()
}
