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

/// A per-VM secret the host hands the agent in its hello (over the
/// connection the guest dialled, which only the VM's host can accept).
/// Every host-initiated connection must show it first ([`crate::AUTH_MAGIC`]).
/// Its `Debug` never shows the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionToken(pub [u8; SessionToken::LEN]);

impl SessionToken {
    /// Bytes in a token.
    pub const LEN: usize = 32;

    /// Compares with `other` in time independent of where they differ.
    pub fn matches(&self, other: &[u8]) -> bool {
        other.len() == Self::LEN
            && self
                .0
                .iter()
                .zip(other)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves_and_never_print() {
        let t = SessionToken([7; SessionToken::LEN]);
        assert!(t.matches(&[7; 32]));
        let mut other = [7u8; 32];
        other[31] = 8;
        assert!(!t.matches(&other));
        assert!(!t.matches(&[7; 31]));
        assert_eq!(format!("{t:?}"), "SessionToken(..)");
        // On the wire: 32 raw bytes, no length prefix.
        assert_eq!(postcard::to_allocvec(&t).unwrap(), vec![7u8; 32]);
    }
}
