//! Transport: how the host reaches an agent.
//!
//! * [`listen`] — the endpoint the agent dials when it is ready (a Unix socket
//!   served by `vhost-device-vsock`, or a kernel vsock port).
//! * [`handshake`] — the versioned hello on a fresh stream.
//! * [`client`] — the multiplexed request/reply connection on top.

mod calls;
pub mod client;
pub mod listen;
pub mod liveness;
mod reader;
mod writer;

use provium_protocol::{self as proto, AgentHello, AgentMsg, FrameError, HostMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use calls::Event;
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
    VersionMismatch {
        /// This rock's [`proto::PROTOCOL_VERSION`].
        host: u32,
        /// The version in the agent's hello.
        agent: u32,
    },
    /// the agent refused our hello
    #[error("the agent refused the connection: {0}")]
    Refused(String),
    /// unexpected first frame
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// the VM is paused
    #[error("{0}")]
    Paused(String),
    /// interrupted (SIGINT) while waiting for the guest
    #[error("interrupted (SIGINT) while waiting for the guest")]
    Interrupted,
}

/// A fresh per-VM secret from the kernel's random source (no fallback: a
/// guessable token would be no token).
pub fn fresh_token() -> std::io::Result<proto::SessionToken> {
    let mut bytes = [0u8; proto::SessionToken::LEN];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into our buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(proto::SessionToken(bytes))
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
    token: proto::SessionToken,
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
        token,
    })?;
    stream.write_all(&ok).await?;
    Ok(hello)
}

/// Largest frame considered while resynchronising: the agent's hello is
/// far smaller, and a bogus length must not make us wait for bytes that
/// never come.
const RESYNC_MAX_FRAME: usize = 64 * 1024;

/// Starts a new session on a stream whose agent side is already in one (a
/// virtio-serial port after a snapshot restore): sends our hello and skips
/// whatever arrives until the agent answers with its own (the agent treats a
/// mid-session hello as a new session). Stale bytes of a frame the agent was
/// writing when the snapshot was taken are skipped byte by byte, so no
/// misread length can jump over the hello.
pub async fn resync<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    token: proto::SessionToken,
) -> Result<AgentHello, TransportError> {
    let gone = |e: std::io::Error| {
        TransportError::Closed(format!(
            "the agent's stream ended before it answered our hello: {e}"
        ))
    };
    let hello = proto::encode(&HostMsg::Hello {
        version: proto::PROTOCOL_VERSION,
        token,
    })?;
    stream.write_all(&hello).await.map_err(gone)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Every offset is a candidate frame start. One whose length runs
        // past what we have may still complete: keep the bytes from the
        // first such offset, but look further meanwhile (a bogus length
        // must not hide the hello behind it).
        let mut keep_from: Option<usize> = None;
        let mut off = 0;
        while off + proto::FRAME_HEADER_LEN <= buf.len() {
            let mut header = [0u8; proto::FRAME_HEADER_LEN];
            header.copy_from_slice(&buf[off..off + proto::FRAME_HEADER_LEN]);
            let len = u32::from_le_bytes(header) as usize;
            let end = off + proto::FRAME_HEADER_LEN + len;
            if len == 0 || len > RESYNC_MAX_FRAME {
                off += 1;
                continue;
            }
            if end > buf.len() {
                keep_from.get_or_insert(off);
                off += 1;
                continue;
            }
            match proto::decode::<AgentMsg>(&buf[off + proto::FRAME_HEADER_LEN..end]) {
                // The agent sends nothing after its hello until we call.
                Ok(AgentMsg::Hello(h)) if end == buf.len() => {
                    if let Err(agent) = proto::check_version(h.version) {
                        return Err(TransportError::VersionMismatch {
                            host: proto::PROTOCOL_VERSION,
                            agent,
                        });
                    }
                    return Ok(h);
                }
                Ok(AgentMsg::HelloRejected { version, reason }) if end == buf.len() => {
                    return Err(TransportError::Refused(format!(
                        "{reason} (agent version {version})"
                    )))
                }
                _ => off += 1,
            }
        }
        buf.drain(..keep_from.unwrap_or(off).min(buf.len()));
        let n = stream.read(&mut chunk).await.map_err(gone)?;
        if n == 0 {
            return Err(gone(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: proto::SessionToken = proto::SessionToken([5; proto::SessionToken::LEN]);

    #[test]
    fn fresh_tokens_differ() {
        assert_ne!(fresh_token().unwrap(), fresh_token().unwrap());
    }
    use provium_protocol::{AgentMsg, HostMsg, PROTOCOL_VERSION};
    use tokio::io::AsyncWriteExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn agent_hello(version: u32) -> Vec<u8> {
        proto::encode(&AgentMsg::Hello(AgentHello {
            version,
            agent_version: "test".into(),
            kernel: "6.1".into(),
        }))
        .unwrap()
    }

    #[test]
    fn accepts_a_matching_agent_and_answers_hello() {
        rt().block_on(async {
            let (mut host, mut agent) = tokio::io::duplex(4096);
            agent
                .write_all(&agent_hello(PROTOCOL_VERSION))
                .await
                .unwrap();
            let hello = handshake(&mut host, TOKEN).await.unwrap();
            assert_eq!(hello.agent_version, "test");
            let reply = read_frame(&mut agent).await.unwrap();
            assert_eq!(
                proto::decode::<HostMsg>(&reply).unwrap(),
                HostMsg::Hello {
                    version: PROTOCOL_VERSION,
                    token: TOKEN,
                }
            );
        });
    }

    #[test]
    fn version_mismatch_is_reported_to_both_sides() {
        rt().block_on(async {
            let (mut host, mut agent) = tokio::io::duplex(4096);
            agent
                .write_all(&agent_hello(PROTOCOL_VERSION + 1))
                .await
                .unwrap();
            let err = handshake(&mut host, TOKEN).await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("host speaks version {PROTOCOL_VERSION}"))
                    && text.contains(&format!("agent speaks version {}", PROTOCOL_VERSION + 1)),
                "{text}"
            );
            let reply = read_frame(&mut agent).await.unwrap();
            match proto::decode::<HostMsg>(&reply).unwrap() {
                HostMsg::HelloRejected { version, reason } => {
                    assert_eq!(version, PROTOCOL_VERSION);
                    assert!(reason.contains("agent speaks"), "{reason}");
                }
                other => panic!("expected a rejection, got {other:?}"),
            }
        });
    }

    #[test]
    fn resync_skips_stale_bytes_until_the_agents_hello() {
        rt().block_on(async {
            let (mut host, mut agent) = tokio::io::duplex(1 << 16);
            // The tail of a frame written before the snapshot, a whole stale
            // frame, then the hello.
            let stale = proto::encode(&AgentMsg::Reply {
                id: proto::RequestId(9),
                result: Ok(proto::Reply::Unit),
            })
            .unwrap();
            agent.write_all(&[0xff, 0x10, 0, 0, 7]).await.unwrap();
            agent.write_all(&stale).await.unwrap();
            let task = tokio::spawn(async move {
                let hello = read_frame(&mut agent).await.unwrap();
                assert_eq!(
                    proto::decode::<HostMsg>(&hello).unwrap(),
                    HostMsg::Hello {
                        version: PROTOCOL_VERSION,
                        token: TOKEN,
                    }
                );
                agent
                    .write_all(&agent_hello(PROTOCOL_VERSION))
                    .await
                    .unwrap();
                agent
            });
            let hello = resync(&mut host, TOKEN).await.unwrap();
            assert_eq!(hello.agent_version, "test");
            drop(task.await.unwrap());
        });
    }

    #[test]
    fn resync_reports_an_agent_that_went_away() {
        rt().block_on(async {
            let (mut host, mut agent) = tokio::io::duplex(4096);
            agent.write_all(&[1, 2, 3]).await.unwrap();
            drop(agent);
            let err = resync(&mut host, TOKEN).await.unwrap_err();
            assert!(err.to_string().contains("before it answered"), "{err}");
        });
    }

    #[test]
    fn oversized_and_garbage_first_frames_fail_cleanly() {
        rt().block_on(async {
            let (mut host, mut agent) = tokio::io::duplex(4096);
            agent.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
            let err = handshake(&mut host, TOKEN).await.unwrap_err();
            assert!(matches!(
                err,
                TransportError::Frame(FrameError::TooLarge { .. })
            ));

            let (mut host, mut agent) = tokio::io::duplex(4096);
            agent
                .write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff])
                .await
                .unwrap();
            assert!(handshake(&mut host, TOKEN).await.is_err());

            let (mut host, agent) = tokio::io::duplex(4096);
            drop(agent);
            assert!(handshake(&mut host, TOKEN).await.is_err());
        });
    }
}
