//! Where the agent dials in.
//!
//! With `vhost-device-vsock`, a guest `connect(CID 2, port P)` arrives as a
//! connection on the Unix socket `<uds-path>_P`; with kernel vhost-vsock it
//! arrives on a host `AF_VSOCK` listener. Either way the host listens *before*
//! QEMU starts and never polls the guest while it boots.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

/// A byte stream to an agent.
pub enum AgentStream {
    /// A Unix socket: vhost-device-vsock's dial-in socket, or the serial
    /// port's QEMU chardev.
    Unix(UnixStream),
    /// A kernel `AF_VSOCK` connection.
    Vsock(VsockStream),
}

/// A listening endpoint for agent connections.
pub enum AgentListener {
    /// A Unix socket path (vhost-device-vsock's `<uds-path>_P`, or the
    /// serial port's chardev).
    Unix(UnixListener),
    /// Kernel vsock: accepts only connections from `cid`.
    Vsock {
        /// Bound to any CID on the chosen port.
        listener: VsockListener,
        /// The guest's CID; connections from other CIDs are dropped.
        cid: u32,
    },
}

impl AgentListener {
    /// Listens on a Unix socket path.
    pub fn unix(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(AgentListener::Unix(UnixListener::bind(path)?))
    }

    /// Listens on kernel vsock port `port` (`u32::MAX`: any free port);
    /// returns the port. Connections from other CIDs than `cid` are dropped.
    pub fn vsock_on(cid: u32, port: u32) -> io::Result<(Self, u32)> {
        let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))?;
        let port = listener.local_addr()?.port();
        Ok((AgentListener::Vsock { listener, cid }, port))
    }

    /// Waits for the next agent connection.
    pub async fn accept(&self) -> io::Result<AgentStream> {
        match self {
            AgentListener::Unix(l) => Ok(AgentStream::Unix(l.accept().await?.0)),
            AgentListener::Vsock { listener, cid } => loop {
                let (stream, peer) = listener.accept().await?;
                if peer.cid() == *cid {
                    return Ok(AgentStream::Vsock(stream));
                }
                // Another guest dialled our port: not ours, drop it.
            },
        }
    }
}

impl AgentStream {
    /// The socket as a blocking descriptor, leaving the runtime.
    pub fn into_blocking_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let fd = match self {
            AgentStream::Unix(s) => OwnedFd::from(s.into_std()?),
            AgentStream::Vsock(s) => {
                // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new descriptor we
                // own; the tokio stream (and its registration) is dropped.
                let new = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
                if new < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `new` is ours alone.
                unsafe { OwnedFd::from_raw_fd(new) }
            }
        };
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0
                || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(fd)
    }
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            AgentStream::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            AgentStream::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Unix(s) => Pin::new(s).poll_flush(cx),
            AgentStream::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            AgentStream::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl std::os::fd::AsRawFd for AgentStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            AgentStream::Unix(s) => s.as_raw_fd(),
            AgentStream::Vsock(s) => s.as_raw_fd(),
        }
    }
}
