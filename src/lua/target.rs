//! What a guest operation runs against: a VM's agent, or a worker inside it.

use std::sync::Arc;

use provium_protocol::{HandleId, Op};

use super::console::console_note;
use super::errors::{ApiError, ApiResult};
use crate::transport::{client::PendingCall, Client, Completed, TransportError};
use crate::vm::console::Console;

/// An agent endpoint as Lua objects hold it.
#[derive(Clone)]
pub struct Target {
    /// The VM's connection to its agent.
    pub client: Arc<Client>,
    /// The VM's console, whose tail is added to infrastructure errors.
    pub console: Arc<Console>,
    /// `vm "name"` or `worker#3 of vm "name"`, for messages.
    pub label: String,
    /// `vm` or `worker`, for call names (`vm:read_file`).
    pub prefix: &'static str,
    /// Set for a worker: every op is wrapped in `Op::InWorker`.
    pub worker: Option<HandleId>,
    /// Deadline of `run` and `proc:wait` when the call names none (the VM
    /// option `run_timeout`); `None`: no deadline.
    pub run_timeout: Option<std::time::Duration>,
}

impl Target {
    /// Whether `other` drives the same agent process (the same VM
    /// connection and worker): handles are only meaningful there.
    pub fn same_as(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.client, &other.client) && self.worker == other.worker
    }

    /// A transport failure as the Lua error for `call`.
    pub fn infra(&self, call: &str, e: TransportError) -> ApiError {
        ApiError::msg(format!(
            "{}: {call} failed: {e}{}",
            self.label,
            console_note(&self.console)
        ))
    }

    /// Why the connection ended, in words (a generic reason while the
    /// reader has not recorded one yet).
    pub fn end_reason(&self) -> String {
        self.client
            .closed_reason()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "the agent connection ended".into())
    }

    /// The error of `call` when the connection ended before its reply.
    pub fn gone(&self, call: &str) -> ApiError {
        self.infra(call, TransportError::Closed(self.end_reason()))
    }

    /// Cancels `pending` after Ctrl-C → the error of `call`.
    pub fn interrupted(&self, call: &str, pending: &PendingCall) -> ApiError {
        self.client.cancel(pending.id);
        self.infra(call, TransportError::Interrupted)
    }

    /// Fails early, with a clear message, when the connection has ended.
    pub fn check_alive(&self, call: &str) -> ApiResult<()> {
        match self.client.closed_reason() {
            Some(reason) => Err(ApiError::msg(format!(
                "{call}: {} is gone ({reason})",
                self.label
            ))),
            None => Ok(()),
        }
    }

    /// Wraps `op` for this target.
    pub fn wrap(&self, op: Op) -> Op {
        match self.worker {
            Some(worker) => Op::InWorker {
                worker,
                op: Box::new(op),
            },
            None => op,
        }
    }

    /// Starts a call.
    pub fn call(&self, call: &str, op: Op) -> ApiResult<PendingCall> {
        self.check_alive(call)?;
        self.client
            .call(self.wrap(op))
            .map_err(|e| self.infra(call, e))
    }

    /// Sends `op` without waiting for its reply (cleanup from `Drop`, which
    /// must not block the garbage collector).
    pub fn fire(&self, op: Op) {
        if self.client.closed_reason().is_none() {
            let _ = self.client.call(self.wrap(op));
        }
    }

    /// One round trip.
    pub fn roundtrip(&self, call: &str, op: Op) -> ApiResult<Completed> {
        let pending = self.call(call, op)?;
        self.client.wait(pending).map_err(|e| self.infra(call, e))
    }
}
