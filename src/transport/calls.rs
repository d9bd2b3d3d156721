//! The calls in flight on one connection: who waits for which request id,
//! and why the connection ended. Shared by callers and the reader thread.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::{Failure, Reply, RequestId};

/// What a call receives from the agent.
#[derive(Debug)]
pub enum Event {
    /// Bulk bytes on a channel, before the reply: `body[range]` (the frame
    /// body is passed on whole, so the bytes are not copied out of it).
    Data(u8, Vec<u8>, std::ops::Range<usize>),
    /// The final answer.
    Reply(Result<Reply, Failure>),
}

/// The state callers and the reader share.
pub(crate) struct Shared {
    pub(crate) pending: HashMap<RequestId, mpsc::Sender<Event>>,
    /// Why the connection ended, once it has.
    pub(crate) closed: Option<Arc<str>>,
    /// Set while the VM is paused: new calls fail with it at once.
    pub(crate) paused: Option<Arc<str>>,
}

pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A poisoned lock only means another thread panicked while holding it; the
    // map itself is still consistent (every operation on it is one step).
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn fail_all(shared: &Mutex<Shared>, reason: &str) {
    let mut s = lock(shared);
    if s.closed.is_none() {
        s.closed = Some(Arc::from(reason));
    }
    s.pending.clear();
}
