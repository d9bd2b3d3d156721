//! A validated guest operation ([`Request`]) and how its reply is read
//! ([`Kind`]).

use provium_protocol::{Failure, Op};

use crate::lua::args::quote;
use crate::lua::errors::{guest_failure, ApiError};

/// How a reply becomes Lua values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing.
    Unit,
    /// A string (file body).
    Bytes,
    /// A stat table.
    Stat,
    /// A listdir array.
    Entries,
    /// A RunResult table.
    Run,
    /// A syscall result table.
    Syscall,
}

/// A validated operation.
pub struct Request {
    /// The operation sent to the agent.
    pub op: Op,
    /// How its reply becomes Lua values.
    pub kind: Kind,
    /// The call name, e.g. `vm:read_file`.
    pub name: String,
    /// The call with its arguments, for error objects; when `None`, the
    /// name and the quoted path (built only when a call fails: a batch of
    /// 1,000 stats would otherwise format 1,000 strings nobody reads).
    pub shown: Option<String>,
    /// The path for error objects.
    pub path: Option<Vec<u8>>,
    /// `read_file`: the most bytes the host accepts (`None`: no cap).
    pub limit: Option<u64>,
    /// `run`: the command line, for the RunResult's `command`.
    pub command: Option<String>,
}

impl Request {
    /// A request named `name` (e.g. `vm:stat`) for `op`.
    pub fn new(name: &str, op: Op, kind: Kind, path: Option<Vec<u8>>) -> Request {
        Request {
            op,
            kind,
            name: name.to_string(),
            shown: None,
            path,
            limit: None,
            command: None,
        }
    }

    /// The error for a failed reply.
    pub fn failure(&self, f: Failure) -> ApiError {
        let shown = match (&self.shown, &self.path) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => format!("{}({})", self.name, quote(p)),
            (None, None) => format!("{}()", self.name),
        };
        guest_failure(&self.name, shown, self.path.as_deref(), f)
    }
}
