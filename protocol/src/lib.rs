//! The provium wire protocol, shared by the host rock and the guest agent.
//!
//! One long-lived, multiplexed connection per VM carries every operation:
//!
//! * the agent dials the host when it is ready and sends [`AgentMsg::Hello`];
//! * the host answers [`HostMsg::Hello`] (or [`HostMsg::HelloRejected`] and closes);
//! * from then on the host sends [`HostMsg::Call`]s tagged with a [`RequestId`],
//!   and the agent answers each with exactly one [`AgentMsg::Reply`] carrying the
//!   same id. Replies may come in any order; many calls may be in flight.
//! * Bulk bytes never travel in one huge frame: either side may send
//!   [`Data`](AgentMsg::Data) frames for a call that is in flight (file contents,
//!   process output, stream pushes), before its final reply.
//!
//! Frames are `[u32 little-endian body length][postcard body]` ([`frame`]) and run
//! over any byte stream (vsock, a Unix socket, a virtio-serial port).
//!
//! Compatibility rule: the `Hello` variants are variant 0 of both message enums and
//! carry the version as their first field, forever, so two sides of different
//! versions can always read each other's hello and fail with a clear message.

#![deny(missing_docs)]

pub mod frame;
pub mod ids;
pub mod messages;
pub mod wire;

pub use frame::{decode, encode, read_frame, FrameError, FRAME_HEADER_LEN, MAX_FRAME_LEN};
pub use ids::{HandleId, RequestId, SessionToken};
pub use messages::*;

/// Version of this protocol; both sides must agree exactly.
pub const PROTOCOL_VERSION: u32 = 7;

/// vsock port on the host (CID 2) that the agent dials when it is ready.
pub const HOST_PORT: u32 = 1025;

/// vsock port the agent listens on for host-initiated connections (raw echo
/// benchmark and reconnects).
pub const AGENT_PORT: u32 = 1024;

/// Size of the bulk chunks carried by `Data` frames.
pub const CHUNK_LEN: usize = 256 * 1024;

/// What a host writes first on every connection to [`AGENT_PORT`], followed
/// by the VM's [`SessionToken`]; the agent closes a connection that does not
/// show the token, without writing a byte.
pub const AUTH_MAGIC: &[u8; 8] = b"PRVAUTH\n";

/// Magic line a host writes on a fresh connection to [`AGENT_PORT`] to ask for a
/// raw byte echo (used to measure the transport without the RPC layer).
pub const RAW_ECHO_MAGIC: &[u8; 8] = b"PRVECHO\n";

/// Magic for a raw sink: followed by a u64 LE byte count; the agent reads
/// and discards that many bytes, then writes the count back (8 bytes LE).
pub const RAW_SINK_MAGIC: &[u8; 8] = b"PRVSINK\n";

/// Magic for a raw source: followed by a u64 LE byte count; the agent writes
/// that many bytes and closes.
pub const RAW_SOURCE_MAGIC: &[u8; 8] = b"PRVSRCE\n";

/// Name of the benchmarks' raw virtio-serial port (a machine booted with
/// the rock's `_raw_port` option): the raw echo, sink and source of
/// [`AGENT_PORT`] without the protocol or the token (only the host reaches
/// a virtio-serial port), one session after another. Its echo magic is
/// followed by a u64 LE count of the bytes to echo.
pub const RAW_PORT_NAME: &str = "org.provium.raw";

/// Name of the virtio-serial port carrying the protocol when `transport = "serial"`.
pub const SERIAL_PORT_NAME: &str = "org.provium.agent";
