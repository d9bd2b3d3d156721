//! The operations the agent serves, one module per family.
//!
//! Every operation returns an [`OpResult`](crate::error::OpResult); the
//! connection ([`crate::conn`]) decides whether it runs inline on the reader
//! thread (cheap, non-blocking ops) or on a thread of its own.

pub mod fs;
pub mod read;
pub mod run;
pub mod upload;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A wire path (raw bytes) as a filesystem path.
pub fn path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Runs `f` on a pooled thread (see [`crate::pool`]); the name is kept for
/// call sites' readability.
pub fn spawn_thread<F>(_name: &str, f: F) -> std::io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    crate::pool::execute(Box::new(f))
}
