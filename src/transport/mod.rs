//! Transport: how the host reaches an agent.
//!
//! * [`listen`] — the endpoint the agent dials when it is ready (a Unix socket
//!   served by `vhost-device-vsock`, or a kernel vsock port).
//! * [`handshake`] — the versioned hello on a fresh stream.
//! * [`client`] — the multiplexed request/reply connection on top.

pub mod client;
pub mod listen;

use provium_protocol::{self as proto, AgentHello, AgentMsg, FrameError, HostMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use client::{Client, Completed};
pub use listen::{AgentListener, AgentStream};

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// the agent connection is closed
    #[error("agent connection closed: {0}")]
    Closed(String),
    /// framing error
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// I/O error
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// protocol version mismatch
    #[error("protocol version mismatch: the host speaks version {host}, the agent speaks version {agent}; rebuild the guest image with this rock")]
    VersionMismatch { host: u32, agent: u32 },
    /// the agent refused our hello
    #[error("the agent refused the connection: {0}")]
    Refused(String),
    /// unexpected first frame
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// Reads a frame body from an async stream (header checked before allocating).
pub async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Vec<u8>, TransportError> {
    let mut header = [0u8; proto::FRAME_HEADER_LEN];
    rd.read_exact(&mut header).await?;
    let len = proto::frame::body_len(header)?;
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

/// Runs the host side of the hello exchange on a fresh stream: the agent
/// speaks first; a version mismatch is reported to the agent and raised here.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<AgentHello, TransportError> {
    let body = read_frame(stream).await?;
    let hello = match proto::decode::<AgentMsg>(&body)? {
        AgentMsg::Hello(h) => h,
        AgentMsg::HelloRejected { version, reason } => {
            return Err(TransportError::Refused(format!(
                "{reason} (agent version {version})"
            )))
        }
        other => {
            return Err(TransportError::Handshake(format!(
                "expected the agent's hello, got {other:?}"
            )))
        }
    };
    if let Err(agent) = proto::check_version(hello.version) {
        let reject = proto::encode(&HostMsg::HelloRejected {
            version: proto::PROTOCOL_VERSION,
            reason: format!(
                "host speaks protocol version {}, agent speaks {agent}",
                proto::PROTOCOL_VERSION
            ),
        })?;
        let _ = stream.write_all(&reject).await;
        return Err(TransportError::VersionMismatch {
            host: proto::PROTOCOL_VERSION,
            agent,
        });
    }
    let ok = proto::encode(&HostMsg::Hello {
        version: proto::PROTOCOL_VERSION,
    })?;
    stream.write_all(&ok).await?;
    Ok(hello)
}
