//! Serving one connection: hello, handshake, then the multiplexed call loop.
//!
//! The calling thread becomes the connection's reader. Cheap operations run
//! inline on it, which keeps a round trip to one read, one system call and
//! one write: ping, stat, listdir, mkdir, unlink, rename, write_file and its
//! chunks, open_file, reads/writes/seeks of files that cannot block, closing
//! a file, process signal/status/close-stdin, worker signal, and forwarding
//! an op to a worker. Operations that can block (read_file, run, streams,
//! waits, raw calls, ioctls, batches, I/O on FIFOs and ttys, closing a
//! process or a worker, spawning and joining workers) run on pooled threads
//! and reply through the shared [`Sender`] whenever they finish, in any
//! order.
//!
//! Streams and calls relayed to workers are registered in the connection's
//! [`InFlight`](crate::inflight::InFlight) so that the host's `Cancel` (and `Data`, for relays) reach
//! them; whatever is still registered when the connection ends is
//! cancelled.
//!
//! This module: the options, the hello exchange and how a connection ends;
//! `session`: the call loop of a connection that said hello.

mod session;

use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use provium_protocol::{
    check_version, decode, AgentHello, AgentMsg, FrameError, HostMsg, PROTOCOL_VERSION,
    RAW_ECHO_MAGIC,
};

use crate::frames::FrameReader;
use crate::sender::Sender;
use crate::sys;
use session::Session;

/// Capacity of the reader's buffer: small frames arrive in one `read`.
const READ_BUFFER: usize = 64 * 1024;

/// Options for one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Accept [`RAW_ECHO_MAGIC`] in place of the host's hello and turn the
    /// connection into a raw echo (only on host-initiated connections).
    pub allow_echo: bool,
    /// The connection reaches only the VM's own host (the one the guest
    /// dialled, or the serial port): keep the token of its hellos for
    /// host-initiated connections ([`crate::auth`]).
    pub trusted: bool,
    /// Splice large file reads into the stream instead of copying them
    /// through user space ([`Sender::with_fd`]): the virtio-serial port,
    /// where it raised `read_file` of 64 MiB from 180-197 to 223-245 MB/s.
    /// Not vsock: spliced into a vsock socket the same read fell from
    /// 127-134 to 66-71 MB/s (bench/bulk.lua).
    pub splice: bool,
}

/// How a connection ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEnd {
    /// The host closed the connection.
    Closed,
    /// The host rejected our hello (version mismatch).
    Rejected,
    /// We rejected the host's hello (version mismatch).
    RejectedHost,
    /// The host asked for a power-off; the reply has been sent.
    Poweroff,
    /// The connection was a raw echo, now finished.
    Echo,
}

/// Why a connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Bad framing (oversized, truncated, undecodable frame) or a read error.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The handshake went wrong.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Writing to the host failed.
    #[error("cannot write to the host: {0}")]
    Write(io::Error),
}

/// The hello this agent sends first on every connection.
pub fn hello() -> AgentHello {
    AgentHello {
        version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: sys::kernel_release(),
    }
}

/// Serves one connection until it ends; `reader` and `writer` are the two
/// halves of one byte stream. The writer is dropped when this returns (even
/// if operation threads still hold the [`Sender`]), so the host sees the
/// connection close once `reader` is dropped too.
pub fn serve<R, W>(reader: R, writer: W, opts: ServeOptions) -> Result<ConnEnd, ConnError>
where
    R: Read,
    W: Write + AsFd + Send + 'static,
{
    let sender = if opts.splice {
        Sender::with_fd(writer)
    } else {
        Sender::new(writer)
    };
    let _close = CloseOnDrop(sender.clone());
    let mut reader = FrameReader::new(reader);

    sender
        .send(&AgentMsg::Hello(hello()))
        .map_err(ConnError::Write)?;

    // The raw echo magic's first four bytes, read as a length, exceed the
    // frame limit, so it can never be mistaken for a frame.
    if opts.allow_echo && reader.starts_with(RAW_ECHO_MAGIC).map_err(FrameError::Io)? {
        echo(&mut reader, &sender);
        return Ok(ConnEnd::Echo);
    }
    let Some(body) = reader.next_frame()? else {
        return Err(ConnError::Handshake(
            "the host closed the connection before its hello".into(),
        ));
    };
    match decode::<HostMsg>(body) {
        Ok(HostMsg::Hello { version, token }) => {
            if let Some(end) = check_host_version(&sender, version)? {
                return Ok(end);
            }
            if opts.trusted {
                crate::auth::learn(token);
            }
        }
        Ok(HostMsg::HelloRejected { version, reason }) => {
            log!(
                "the host (protocol version {version}) rejected this agent \
                 (protocol version {PROTOCOL_VERSION}): {reason}"
            );
            return Ok(ConnEnd::Rejected);
        }
        Ok(other) => {
            return Err(ConnError::Handshake(format!(
                "expected the host's hello, got {}",
                describe(&other)
            )))
        }
        Err(e) => {
            return Err(ConnError::Handshake(format!(
                "expected the host's hello, got an undecodable frame ({e})"
            )))
        }
    }

    Session::new(opts.trusted, sender).run(&mut reader)
}

/// Checks the host's version; on a mismatch sends `HelloRejected` and
/// returns the end of the connection.
fn check_host_version(sender: &Sender, version: u32) -> Result<Option<ConnEnd>, ConnError> {
    match check_version(version) {
        Ok(()) => Ok(None),
        Err(theirs) => {
            let reason = format!(
                "protocol version mismatch: the agent speaks version {PROTOCOL_VERSION}, \
                 the host speaks version {theirs}"
            );
            log!("rejecting the host: {reason}");
            sender
                .send(&AgentMsg::HelloRejected {
                    version: PROTOCOL_VERSION,
                    reason,
                })
                .map_err(ConnError::Write)?;
            Ok(Some(ConnEnd::RejectedHost))
        }
    }
}

/// Closes the connection's writer when `serve` returns, however it returns.
struct CloseOnDrop(Sender);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A short name of a host message for error messages.
fn describe(msg: &HostMsg) -> String {
    match msg {
        HostMsg::Hello { .. } => "Hello".into(),
        HostMsg::HelloRejected { .. } => "HelloRejected".into(),
        HostMsg::Call { id, .. } => format!("Call for {id}"),
        HostMsg::Data { id, .. } => format!("Data for {id}"),
        HostMsg::Cancel { id } => format!("Cancel for {id}"),
    }
}

/// Raw echo: writes back every byte read, until end of stream.
pub fn echo<R: Read>(reader: &mut R, sender: &Sender) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if sender.send_raw(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
