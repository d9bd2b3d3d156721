//! Postcard variant numbers that hand-written encoders and zero-copy
//! parsers rely on, in one place.
//!
//! Postcard encodes an enum value as its variant's index (a varint: one
//! byte below 128) followed by the fields. The fast paths of the agent
//! (`Data` frames, batch replies, relays to workers) and the borrowed views
//! of this crate ([`crate::DataView`], [`crate::AgentDataView`]) write or
//! match those bytes directly, so every index they use is named here, and
//! the tests below check each one against the derived encoding. They also
//! pin every variant of the message enums by name: a variant inserted
//! anywhere but at the end shifts the indexes after it and fails them.
//!
//! Each constant is named after its enum: `HOST_*` for
//! [`crate::HostMsg`], `AGENT_*` for [`crate::AgentMsg`], `OP_*` for
//! [`crate::Op`], `REPLY_*` for [`crate::Reply`], `RESULT_*` for the
//! `Result<Reply, Failure>` of a reply.

/// [`crate::HostMsg::Hello`].
pub const HOST_HELLO: u8 = 0;
/// [`crate::HostMsg::Call`].
pub const HOST_CALL: u8 = 2;
/// [`crate::HostMsg::Data`].
pub const HOST_DATA: u8 = 3;
/// [`crate::HostMsg::Cancel`].
pub const HOST_CANCEL: u8 = 4;

/// [`crate::AgentMsg::Reply`].
pub const AGENT_REPLY: u8 = 1;
/// [`crate::AgentMsg::Data`].
pub const AGENT_DATA: u8 = 2;
/// [`crate::AgentMsg::HelloRejected`].
pub const AGENT_HELLO_REJECTED: u8 = 3;

/// `Ok` of the `Result<Reply, Failure>` in [`crate::AgentMsg::Reply`].
pub const RESULT_OK: u8 = 0;

/// [`crate::Op::Stat`].
pub const OP_STAT: u8 = 1;
/// [`crate::Op::Batch`].
pub const OP_BATCH: u8 = 24;
/// [`crate::Op::InWorker`].
pub const OP_IN_WORKER: u8 = 26;

/// [`crate::Reply::Stat`].
pub const REPLY_STAT: u8 = 1;
/// [`crate::Reply::Bytes`].
pub const REPLY_BYTES: u8 = 3;
/// [`crate::Reply::Batch`].
pub const REPLY_BATCH: u8 = 11;

#[cfg(test)]
mod tests;
