//! The process-wide handle table: open files, started processes, workers.
//!
//! One table per agent process, shared by all its connections, so a handle
//! outlives the connection that created it (a host that reconnects after a
//! snapshot restore keeps using its handles). Ids come from one counter
//! starting at 1, whatever the kind; 0 is never handed out. A worker is a
//! separate agent process and so has a table of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::{Failure, FailureKind, HandleId};

use crate::ops::file::FileHandle;
use crate::ops::process::Process;
use crate::worker::Worker;

/// What a handle id refers to.
#[derive(Clone)]
pub enum Handle {
    /// An open file (`OpenFile`).
    File(Arc<FileHandle>),
    /// A process started by `RunAsync`.
    Process(Arc<Process>),
    /// A worker agent process (`SpawnWorker`).
    Worker(Arc<Worker>),
}

impl Handle {
    fn kind(&self) -> &'static str {
        match self {
            Handle::File(_) => "a file",
            Handle::Process(_) => "a process",
            Handle::Worker(_) => "a worker",
        }
    }
}

/// The next id; 0 until the first use (see [`first_id`]).
static NEXT: AtomicU64 = AtomicU64::new(0);
static TABLE: Mutex<BTreeMap<u64, Handle>> = Mutex::new(BTreeMap::new());

fn table() -> MutexGuard<'static, BTreeMap<u64, Handle>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ids start at `pid << 32`: when PID 1 restarts a failed op server, the
/// host's objects from before hold ids the new process never hands out, so
/// they fail as unknown handles instead of reaching its new files.
fn first_id() -> u64 {
    (u64::from(std::process::id()) << 32) | 1
}

/// Registers a handle under a fresh id.
pub fn insert(handle: Handle) -> HandleId {
    let _ = NEXT.compare_exchange(0, first_id(), Ordering::Relaxed, Ordering::Relaxed);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    table().insert(id, handle);
    HandleId(id)
}

/// Looks a handle up.
pub fn get(id: HandleId) -> Option<Handle> {
    table().get(&id.0).cloned()
}

/// The failure for an id the table does not hold, e.g. `read on handle#7`.
pub fn unknown(op: &str, id: HandleId) -> Failure {
    Failure::other(FailureKind::UnknownHandle, format!("{op} on {id}"))
}

fn wrong_kind(op: &str, id: HandleId, handle: &Handle, want: &str) -> Failure {
    Failure::other(
        FailureKind::UnknownHandle,
        format!("{op} on {id}: {} handle, not {want}", handle.kind()),
    )
}

/// The open file `id`, for operation `op` (named in the failure).
pub fn file(id: HandleId, op: &str) -> Result<Arc<FileHandle>, Failure> {
    match get(id) {
        Some(Handle::File(f)) => Ok(f),
        Some(other) => Err(wrong_kind(op, id, &other, "a file")),
        None => Err(unknown(op, id)),
    }
}

/// The process `id`, for operation `op`.
pub fn process(id: HandleId, op: &str) -> Result<Arc<Process>, Failure> {
    match get(id) {
        Some(Handle::Process(p)) => Ok(p),
        Some(other) => Err(wrong_kind(op, id, &other, "a process")),
        None => Err(unknown(op, id)),
    }
}

/// The worker `id`, for operation `op`.
pub fn worker(id: HandleId, op: &str) -> Result<Arc<Worker>, Failure> {
    match get(id) {
        Some(Handle::Worker(w)) => Ok(w),
        Some(other) => Err(wrong_kind(op, id, &other, "a worker")),
        None => Err(unknown(op, id)),
    }
}

/// Removes and returns handle `id` (whatever its kind).
pub fn remove(id: HandleId, op: &str) -> Result<Handle, Failure> {
    table().remove(&id.0).ok_or_else(|| unknown(op, id))
}

/// Removes and returns worker `id`; other kinds stay in the table.
pub fn remove_worker(id: HandleId, op: &str) -> Result<Arc<Worker>, Failure> {
    let mut table = table();
    match table.get(&id.0) {
        Some(Handle::Worker(w)) => {
            let w = Arc::clone(w);
            table.remove(&id.0);
            Ok(w)
        }
        Some(other) => Err(wrong_kind(op, id, other, "a worker")),
        None => Err(unknown(op, id)),
    }
}
