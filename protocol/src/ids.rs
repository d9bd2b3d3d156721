//! Newtypes for the identifiers that cross the wire.

use serde::{Deserialize, Serialize};

/// Identifies one call in flight on a connection; chosen by the host, echoed by
/// the agent in every `Data` and the final `Reply` of that call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// An agent-side resource (open file, process, worker, stream). Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HandleId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request#{}", self.0)
    }
}

impl std::fmt::Display for HandleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handle#{}", self.0)
    }
}
