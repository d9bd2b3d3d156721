//! Calls of one connection that the host can still reach after they
//! started: streams (cancelled through their [`Trigger`]) and calls relayed
//! to a worker (whose `Data` and `Cancel` frames are forwarded to it).
//!
//! The connection's reader thread consults it for every `HostMsg::Data` and
//! `HostMsg::Cancel`; stream threads and worker reader threads remove their
//! entries before they send the final reply, so a late frame for a finished
//! call finds nothing. When the connection ends (or the host starts a new
//! session on it) everything still registered is cancelled, so no stream
//! outlives the host that asked for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::{Failure, RequestId};

use crate::error::bad_request;
use crate::trigger::Trigger;

/// Where relayed calls run (a worker): what the connection forwards to it.
pub trait RelayPeer: Send + Sync {
    /// Forwards an upload chunk of relayed call `inner`.
    fn data(&self, inner: RequestId, chunk: &[u8], last: bool);
    /// Forwards a cancel of relayed call `inner`.
    fn cancel(&self, inner: RequestId);
}

/// A call running in a worker under another request id.
#[derive(Clone)]
pub struct Relay {
    /// The worker running the call.
    pub peer: Arc<dyn RelayPeer>,
    /// The call's id on the worker's channel.
    pub inner: RequestId,
}

#[derive(Default)]
struct Calls {
    streams: HashMap<RequestId, Arc<Trigger>>,
    relays: HashMap<RequestId, Relay>,
}

/// The reachable calls of one connection (cheap to clone, shared).
#[derive(Clone, Default)]
pub struct InFlight {
    calls: Arc<Mutex<Calls>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_free(calls: &Calls, id: RequestId) -> Result<(), Failure> {
        if calls.streams.contains_key(&id) || calls.relays.contains_key(&id) {
            return Err(bad_request(format!("{id} is already in flight")));
        }
        Ok(())
    }

    /// Registers a stream; its trigger fires on cancel.
    pub fn add_stream(&self, id: RequestId) -> Result<Arc<Trigger>, Failure> {
        let mut calls = self.lock();
        Self::check_free(&calls, id)?;
        let trigger = Arc::new(Trigger::new());
        calls.streams.insert(id, Arc::clone(&trigger));
        Ok(trigger)
    }

    /// Forgets a finished stream.
    pub fn end_stream(&self, id: RequestId) {
        self.lock().streams.remove(&id);
    }

    /// Registers a relayed call.
    pub fn add_relay(&self, id: RequestId, relay: Relay) -> Result<(), Failure> {
        let mut calls = self.lock();
        Self::check_free(&calls, id)?;
        calls.relays.insert(id, relay);
        Ok(())
    }

    /// Forgets a relayed call that got its reply.
    pub fn end_relay(&self, id: RequestId) {
        self.lock().relays.remove(&id);
    }

    /// The relay of host call `id`, if it is one.
    pub fn relay(&self, id: RequestId) -> Option<Relay> {
        self.lock().relays.get(&id).cloned()
    }

    /// Handles `HostMsg::Cancel`: fires a stream's trigger or forwards the
    /// cancel to a worker. False when `id` is neither.
    pub fn cancel(&self, id: RequestId) -> bool {
        let (stream, relay) = {
            let calls = self.lock();
            (
                calls.streams.get(&id).cloned(),
                calls.relays.get(&id).cloned(),
            )
        };
        if let Some(trigger) = stream {
            trigger.fire();
            return true;
        }
        if let Some(relay) = relay {
            relay.peer.cancel(relay.inner);
            return true;
        }
        false
    }

    /// Cancels everything (the connection or session ended).
    pub fn cancel_all(&self) {
        let (streams, relays) = {
            let mut calls = self.lock();
            (
                std::mem::take(&mut calls.streams),
                std::mem::take(&mut calls.relays),
            )
        };
        for trigger in streams.into_values() {
            trigger.fire();
        }
        for relay in relays.into_values() {
            relay.peer.cancel(relay.inner);
        }
    }
}
