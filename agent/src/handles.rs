//! The process-wide handle table: open files, started processes, workers.
//!
//! One table per agent process, shared by all its connections, so a handle
//! outlives the connection that created it (a host that reconnects after a
//! snapshot restore keeps using its handles). Ids come from one counter
//! starting at 1, whatever the kind; 0 is never handed out. A worker is a
//! separate agent process and so has a table of its own.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::{Failure, FailureKind, HandleId};

use crate::error::{internal, OpResult};

/// Something a handle id can refer to (an open file, a process, a worker).
/// Each kind implements this where it is defined, so this table names none
/// of them.
pub trait Resource: Any + Send + Sync {
    /// The kind, as failures name it: `a file`.
    const KIND: &'static str;

    /// `Op::Close` on it, once removed from the table (may block).
    fn close(&self) -> OpResult;
}

/// A handle of any kind, as the table holds it.
#[derive(Clone)]
pub struct Handle {
    /// [`Resource::KIND`] of the value.
    kind: &'static str,
    value: Arc<dyn Any + Send + Sync>,
    /// [`Resource::close`] of the value's type.
    close: fn(&(dyn Any + Send + Sync)) -> OpResult,
}

impl Handle {
    /// Wraps a resource.
    pub fn new<R: Resource>(value: Arc<R>) -> Handle {
        Handle {
            kind: R::KIND,
            value,
            close: |v| match v.downcast_ref::<R>() {
                Some(r) => r.close(),
                None => Err(internal("close: a handle of the wrong type")),
            },
        }
    }

    /// The resource, when it is an `R`; else the handle back.
    pub fn downcast<R: Resource>(self) -> Result<Arc<R>, Handle> {
        let Handle { kind, value, close } = self;
        value
            .downcast::<R>()
            .map_err(|value| Handle { kind, value, close })
    }

    /// Closes the resource (see [`Resource::close`]).
    pub fn close(&self) -> OpResult {
        (self.close)(&*self.value)
    }

    fn kind(&self) -> &'static str {
        self.kind
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

/// Registers `value` under a fresh id.
pub fn insert<R: Resource>(value: Arc<R>) -> HandleId {
    let _ = NEXT.compare_exchange(0, first_id(), Ordering::Relaxed, Ordering::Relaxed);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    table().insert(id, Handle::new(value));
    HandleId(id)
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

/// The `R` under `id`, for operation `op` (named in the failure).
pub fn get<R: Resource>(id: HandleId, op: &str) -> Result<Arc<R>, Failure> {
    let found = table().get(&id.0).cloned();
    match found {
        Some(handle) => handle
            .downcast::<R>()
            .map_err(|other| wrong_kind(op, id, &other, R::KIND)),
        None => Err(unknown(op, id)),
    }
}

/// Removes and returns handle `id` (whatever its kind).
pub fn remove(id: HandleId, op: &str) -> Result<Handle, Failure> {
    table().remove(&id.0).ok_or_else(|| unknown(op, id))
}

/// Removes and returns the `R` under `id`; other kinds stay in the table.
pub fn remove_kind<R: Resource>(id: HandleId, op: &str) -> Result<Arc<R>, Failure> {
    let mut table = table();
    match table.get(&id.0) {
        Some(handle) if handle.value.is::<R>() => {
            let handle = table.remove(&id.0).ok_or_else(|| unknown(op, id))?;
            handle
                .downcast::<R>()
                .map_err(|other| wrong_kind(op, id, &other, R::KIND))
        }
        Some(other) => Err(wrong_kind(op, id, other, R::KIND)),
        None => Err(unknown(op, id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provium_protocol::Reply;

    struct Thing;
    struct Widget;

    impl Resource for Thing {
        const KIND: &'static str = "a thing";

        fn close(&self) -> OpResult {
            Ok(Reply::Count(7))
        }
    }

    impl Resource for Widget {
        const KIND: &'static str = "a widget";

        fn close(&self) -> OpResult {
            Ok(Reply::Unit)
        }
    }

    #[test]
    fn kinds_are_checked_and_named() {
        let id = insert(Arc::new(Thing));
        assert!(get::<Thing>(id, "read").is_ok());
        let wrong = get::<Widget>(id, "read").err().map(|f| (f.kind, f.message));
        let message = format!("read on {id}: a thing handle, not a widget");
        assert_eq!(wrong, Some((FailureKind::UnknownHandle, message.clone())));
        let kept = remove_kind::<Widget>(id, "read").err().map(|f| f.message);
        assert_eq!(kept, Some(message));
        let handle = remove(id, "close").map_err(|f| f.message).expect("removed");
        assert_eq!(handle.close(), Ok(Reply::Count(7)));
        assert!(handle.clone().downcast::<Widget>().is_err());
        assert!(handle.downcast::<Thing>().is_ok());
        let gone = get::<Thing>(id, "read").err().map(|f| f.message);
        assert_eq!(gone, Some(format!("read on {id}")));
        let w = insert(Arc::new(Widget));
        assert!(remove_kind::<Widget>(w, "join").is_ok());
        assert!(remove(w, "close").is_err());
    }
}
