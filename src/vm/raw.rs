//! Raw host-initiated streams to the agent's service port, beside the RPC
//! connection: only for the transport benchmarks and the spec that shows a
//! stranger without the session token gets nothing (`vm:_raw_*` in Lua).

use std::path::PathBuf;

use provium_protocol as proto;

use super::{Machine, Transport, VmError};
use crate::transport;

impl Machine {
    /// Where a raw host-initiated stream to the agent can be opened: its
    /// vsock service port, or on a serial machine the benchmarks' raw port
    /// (`BootExtras::raw_port`; the agent's port carries one connection).
    pub fn raw_endpoint(&self) -> Option<RawEndpoint> {
        match self.transport {
            Transport::Vsock => Some(RawEndpoint {
                uds: self.daemon.as_ref().map(|d| d.uds.clone()),
                cid: self.cid,
                token: self.token,
                serial: None,
            }),
            Transport::Serial => self.raw_port.as_ref().map(|p| RawEndpoint {
                uds: None,
                cid: 0,
                token: self.token,
                serial: Some(p.clone()),
            }),
        }
    }
}

/// The agent's service port as seen from the host.
#[derive(Clone)]
pub struct RawEndpoint {
    uds: Option<PathBuf>,
    cid: u32,
    token: proto::SessionToken,
    /// The raw virtio-serial port's host socket (no token there: only the
    /// host reaches it).
    serial: Option<PathBuf>,
}

impl RawEndpoint {
    /// Whether this is the raw serial port, where an echo session says how
    /// many bytes it will echo (its sessions do not end with a connection).
    pub fn counted_echo(&self) -> bool {
        self.serial.is_some()
    }
}

impl RawEndpoint {
    /// Opens a fresh host-initiated stream to the agent's service port,
    /// bypassing the RPC connection (used by the transport benchmarks).
    pub async fn connect(&self) -> Result<transport::AgentStream, VmError> {
        use tokio::io::AsyncWriteExt;
        if let Some(sock) = &self.serial {
            let s = tokio::net::UnixStream::connect(sock).await?;
            return Ok(transport::AgentStream::Unix(s));
        }
        let mut s = self.connect_without_token().await?;
        let mut proof = proto::AUTH_MAGIC.to_vec();
        proof.extend_from_slice(&self.token.0);
        s.write_all(&proof).await?;
        Ok(s)
    }

    /// Opens a stream to the agent's service port as a stranger would,
    /// without showing the token (for the spec that shows it gets nothing).
    pub async fn connect_without_token(&self) -> Result<transport::AgentStream, VmError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.serial.is_some() {
            return Err(VmError::Config(
                "the raw serial port has no token to leave out".into(),
            ));
        }
        match (&self.uds, self.cid) {
            (Some(d), _) => {
                // vhost-device-vsock: `CONNECT <port>\n`, answered `OK <port>\n`.
                let mut s = tokio::net::UnixStream::connect(d).await?;
                s.write_all(format!("CONNECT {}\n", proto::AGENT_PORT).as_bytes())
                    .await?;
                let mut line = Vec::new();
                loop {
                    let b = s.read_u8().await?;
                    if b == b'\n' {
                        break;
                    }
                    line.push(b);
                    if line.len() > 64 {
                        break;
                    }
                }
                if !line.starts_with(b"OK") {
                    return Err(VmError::Infra(format!(
                        "vhost-device-vsock refused the connection: {}",
                        String::from_utf8_lossy(&line)
                    )));
                }
                Ok(transport::AgentStream::Unix(s))
            }
            (None, cid) => {
                let addr = tokio_vsock::VsockAddr::new(cid, proto::AGENT_PORT);
                Ok(transport::AgentStream::Vsock(
                    tokio_vsock::VsockStream::connect(addr).await?,
                ))
            }
        }
    }
}
