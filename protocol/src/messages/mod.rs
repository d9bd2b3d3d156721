//! Message types. Field order is wire order (postcard is not self-describing):
//! append new variants at the end of an enum, never reorder, and bump
//! [`crate::PROTOCOL_VERSION`] for any change that an older peer could misread.
//! Variant indexes that hand-written encoders rely on live in [`crate::wire`],
//! whose tests pin every variant of the message enums.
//!
//! Layout: the frames themselves ([`HostMsg`], [`AgentMsg`]) here; what the
//! host asks in [`op`]; what the agent answers in [`reply`]; the decoding
//! depth limit in `nesting` ([`MAX_NESTING`]).

mod nesting;
pub mod op;
pub mod reply;

pub use nesting::MAX_NESTING;
pub use op::*;
pub use reply::*;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{RequestId, SessionToken};

/// `Data` channel carrying a file body (read_file), a long listing's
/// entries, or a batch's results sent ahead of its reply.
pub const CH_BODY: u8 = 0;
/// `Data` channel carrying a process's standard output.
pub const CH_STDOUT: u8 = 1;
/// `Data` channel carrying a process's standard error.
pub const CH_STDERR: u8 = 2;
/// `Data` channel of a size hint: 8 bytes, u64 little-endian, sent before the
/// first body chunk of a `ReadFile` longer than one chunk (the size `fstat`
/// gave; the body may still turn out shorter or longer). The agent then waits
/// (up to 30 s) for an empty `HostMsg::Data` — the host's go — before sending
/// the body, so the host can build the result in place first instead of
/// joining chunks into a second copy.
pub const CH_SIZE_HINT: u8 = 3;

/// What the agent says first on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    /// Must stay the first field: see the crate docs.
    pub version: u32,
    /// The agent crate's version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel: String,
}

/// Frames the host sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    /// The host accepts the agent's hello; `version` is the host's version.
    /// `token` is the VM's secret for host-initiated connections (learnt
    /// only on connections the guest dialled; zero towards workers).
    Hello {
        /// The host's [`crate::PROTOCOL_VERSION`]; must stay the first field.
        version: u32,
        /// The VM's secret that host-initiated connections must show.
        token: SessionToken,
    },
    /// The host refuses the agent (version mismatch) and closes the connection.
    HelloRejected {
        /// The host's [`crate::PROTOCOL_VERSION`]; must stay the first field.
        version: u32,
        /// Why, for the agent's log.
        reason: String,
    },
    /// Starts an operation.
    Call {
        /// The call's id, chosen by the host, unique among calls in flight.
        id: RequestId,
        /// What to do.
        op: Op,
    },
    /// More upload bytes for a call in flight (write_file, process stdin).
    /// `last` ends the upload.
    Data {
        /// The call the bytes belong to.
        id: RequestId,
        /// The next bytes of the upload (may be empty).
        chunk: ByteBuf,
        /// Whether this is the upload's final frame.
        last: bool,
    },
    /// Asks the agent to end a call early (closes a stream, drops an upload).
    Cancel {
        /// The call to end.
        id: RequestId,
    },
}

/// Frames the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// First frame on every connection.
    Hello(AgentHello),
    /// The final answer to a call.
    Reply {
        /// The call this answers.
        id: RequestId,
        /// What the call gave, or why it failed.
        result: Result<Reply, Failure>,
    },
    /// Bulk bytes for a call in flight, before its reply (file bodies, process
    /// output, stream pushes). The host concatenates them per channel.
    Data {
        /// The call the bytes belong to.
        id: RequestId,
        /// Which stream of the call they continue ([`CH_BODY`], [`CH_STDOUT`],
        /// [`CH_STDERR`] or [`CH_SIZE_HINT`]).
        channel: u8,
        /// The next bytes of that channel (up to about [`crate::CHUNK_LEN`]).
        chunk: ByteBuf,
    },
    /// The agent refuses the host's hello (version mismatch) and closes.
    HelloRejected {
        /// The agent's [`crate::PROTOCOL_VERSION`]; must stay the first field.
        version: u32,
        /// Why, for the host's error message.
        reason: String,
    },
}

/// A borrowed view of a [`HostMsg::Data`] frame body: lets a receiver write
/// upload bytes straight from its read buffer instead of copying them into
/// an owned message first (bulk uploads are copy-bound under TCG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataView<'a> {
    /// The call the bytes belong to.
    pub id: RequestId,
    /// The upload bytes, borrowed from the frame body.
    pub chunk: &'a [u8],
    /// Whether this is the upload's final frame.
    pub last: bool,
}

impl HostMsg {
    /// Parses `body` as a `Data` frame without copying; `None` when it is
    /// another kind of message (decode those with [`crate::decode`]).
    pub fn data_view(body: &[u8]) -> Option<Result<DataView<'_>, crate::FrameError>> {
        let rest = body.strip_prefix(&[crate::wire::HOST_DATA])?;
        let parse = || {
            let (id, rest) = postcard::take_from_bytes::<RequestId>(rest)?;
            let (chunk, rest) = postcard::take_from_bytes::<&[u8]>(rest)?;
            let (last, rest) = postcard::take_from_bytes::<bool>(rest)?;
            if !rest.is_empty() {
                return Err(postcard::Error::DeserializeBadEncoding);
            }
            Ok(DataView { id, chunk, last })
        };
        Some(parse().map_err(crate::FrameError::from))
    }
}

/// A borrowed view of an [`AgentMsg::Data`] frame body (see [`DataView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDataView {
    /// The call the bytes belong to.
    pub id: RequestId,
    /// Which stream of the call they continue (`CH_*`).
    pub channel: u8,
    /// Where the chunk lies within the frame body.
    pub chunk: std::ops::Range<usize>,
}

impl AgentMsg {
    /// Locates the chunk of a `Data` frame without copying it; `None` when
    /// `body` is another kind of message.
    pub fn data_view(body: &[u8]) -> Option<Result<AgentDataView, crate::FrameError>> {
        let rest = body.strip_prefix(&[crate::wire::AGENT_DATA])?;
        let parse = || {
            let (id, rest) = postcard::take_from_bytes::<RequestId>(rest)?;
            let (channel, rest) = postcard::take_from_bytes::<u8>(rest)?;
            let (chunk, rest) = postcard::take_from_bytes::<&[u8]>(rest)?;
            if !rest.is_empty() {
                return Err(postcard::Error::DeserializeBadEncoding);
            }
            let start = body.len() - chunk.len();
            Ok(AgentDataView {
                id,
                channel,
                chunk: start..body.len(),
            })
        };
        Some(parse().map_err(crate::FrameError::from))
    }
}

/// Checks a peer's protocol version; `Err` carries the peer's version.
pub fn check_version(peer: u32) -> Result<(), u32> {
    if peer == crate::PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_view_matches_the_derived_encoding() {
        for (len, last) in [
            (0usize, true),
            (1, false),
            (127, false),
            (128, true),
            (70_000, true),
        ] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let msg = HostMsg::Data {
                id: RequestId(300 + len as u64),
                chunk: ByteBuf::from(chunk.clone()),
                last,
            };
            let frame = crate::encode(&msg).unwrap();
            let view = HostMsg::data_view(&frame[crate::FRAME_HEADER_LEN..])
                .unwrap()
                .unwrap();
            assert_eq!(view.id, RequestId(300 + len as u64));
            assert_eq!(view.chunk, &chunk[..]);
            assert_eq!(view.last, last);
        }
    }

    #[test]
    fn agent_data_view_matches_the_derived_encoding() {
        for len in [0usize, 5, 128, 300_000] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
            let frame = crate::encode(&AgentMsg::Data {
                id: RequestId(77),
                channel: 2,
                chunk: ByteBuf::from(chunk.clone()),
            })
            .unwrap();
            let body = &frame[crate::FRAME_HEADER_LEN..];
            let view = AgentMsg::data_view(body).unwrap().unwrap();
            assert_eq!(view.id, RequestId(77));
            assert_eq!(view.channel, 2);
            assert_eq!(&body[view.chunk], &chunk[..]);
        }
        let reply = crate::encode(&AgentMsg::Reply {
            id: RequestId(1),
            result: Ok(Reply::Unit),
        })
        .unwrap();
        assert!(AgentMsg::data_view(&reply[crate::FRAME_HEADER_LEN..]).is_none());
        assert!(matches!(AgentMsg::data_view(&[2, 1, 0, 9]), Some(Err(_))));
    }

    #[test]
    fn data_view_ignores_other_messages_and_rejects_garbage() {
        let call = crate::encode(&HostMsg::Call {
            id: RequestId(1),
            op: Op::Ping,
        })
        .unwrap();
        assert!(HostMsg::data_view(&call[crate::FRAME_HEADER_LEN..]).is_none());
        assert!(matches!(HostMsg::data_view(&[3, 1, 200]), Some(Err(_))));
        assert!(matches!(HostMsg::data_view(&[3, 1, 0, 1, 9]), Some(Err(_))));
    }
}
