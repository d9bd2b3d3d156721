//! The op server: finds the host over the configured transport and serves
//! every connection with [`conn::serve`].
//!
//! * **vsock** (default): dials CID 2 on the configured port, retrying every
//!   [`RETRY`] until the host listens; when a connection ends (the host
//!   closed it, or a snapshot reset it) it dials again. With kernel
//!   vhost-vsock the port is the guest's own CID ([`HostPort::OwnCid`]),
//!   read again at every dial: each restored copy of a snapshot has a CID
//!   of its own, so copies restored at once never dial the same port.
//! * **serial**: serves the virtio-serial port named [`SERIAL_PORT_NAME`],
//!   looking for it every [`RETRY`] until it appears; each time the host side
//!   (re)connects a new session starts with a fresh hello. The guest may not
//!   see a quick close-and-reopen of the host side at all, so a reconnecting
//!   host should send its `Hello` first and skip frames until the agent's
//!   `Hello` (the agent answers a mid-session `Hello` with a fresh one and
//!   drops the old session's pending replies; see [`conn`]).
//! * In both cases it also listens on vsock port [`AGENT_PORT`] for
//!   host-initiated connections: raw echo ([`RAW_ECHO_MAGIC`]) or the protocol.
//!
//! A power-off request ends the server process with [`POWEROFF_EXIT_CODE`],
//! which PID 1 turns into `reboot(RB_POWER_OFF)`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::{rawport, vports};
use rustix::net::RecvFlags;

use provium_protocol::{
    AGENT_PORT, RAW_ECHO_MAGIC, RAW_SINK_MAGIC, RAW_SOURCE_MAGIC, SERIAL_PORT_NAME,
};
use vsock::{VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};

use crate::auth;
use crate::config::POWEROFF_EXIT_CODE;
use crate::config::{Config, HostPort, Transport};
use crate::conn::{self, ConnEnd, ConnError, ServeOptions};
use crate::ops::spawn_thread;
use crate::sender::Sender;
use crate::sys;

/// Delay between attempts to reach the host (dialing, finding the port).
pub const RETRY: Duration = Duration::from_millis(20);

/// How long a host-initiated connection has to show the echo magic before
/// the agent sends its hello (a late magic still works: see
/// [`ServeOptions::allow_echo`]).
pub const ECHO_GRACE: Duration = Duration::from_millis(25);

/// Where the server runs.
#[derive(Debug, Clone, Default)]
pub struct ServerEnv {
    /// Forked by the agent's own PID 1: a power-off request exits with
    /// [`POWEROFF_EXIT_CODE`]. Otherwise it only ends the connection.
    pub under_init: bool,
    /// A path that processes may need (syslogd's socket, so `logger` works
    /// from the very first call). The first `run` waits for it briefly;
    /// dialing the host does not, which keeps it off the boot path.
    pub wait_for: Option<PathBuf>,
}

/// Runs the server forever.
pub fn run(cfg: &Config, env: &ServerEnv) -> ! {
    if let Some(p) = &env.wait_for {
        crate::prereq::set(p.clone());
    }
    let under_init = env.under_init;
    // Bind before dialing, so the port is open once the host sees us.
    match VsockListener::bind_with_cid_port(VMADDR_CID_ANY, AGENT_PORT) {
        Ok(listener) => {
            if let Err(e) = spawn_thread("listen", move || listen(listener, under_init)) {
                log!("cannot start the vsock listener thread: {e}");
            }
        }
        Err(e) => log!("cannot listen on vsock port {AGENT_PORT}: {e}"),
    }
    if cfg.raw_port {
        if let Err(e) = spawn_thread("raw port", rawport::serve) {
            log!("cannot start the raw port thread: {e}");
        }
    }
    match cfg.transport {
        Transport::Vsock => dial_home(cfg.port, under_init),
        Transport::Serial => serve_serial(under_init),
    }
}

/// Acts on how a connection ended; a power-off request under init ends the
/// process with [`POWEROFF_EXIT_CODE`].
fn finished(what: &str, result: Result<ConnEnd, ConnError>, under_init: bool) {
    match result {
        Ok(ConnEnd::Poweroff) if under_init => {
            debug!("power-off requested on {what}");
            rustix::fs::sync();
            std::process::exit(POWEROFF_EXIT_CODE);
        }
        Ok(ConnEnd::Poweroff) => {
            log!("power-off requested on {what}, but this agent is not PID 1's server: connection closed")
        }
        Ok(end) => debug!("{what} ended: {end:?}"),
        Err(e) => log!("{what} dropped: {e}"),
    }
}

/// Dials the host forever.
fn dial_home(port: HostPort, under_init: bool) -> ! {
    let mut failures: u64 = 0;
    loop {
        let (port, dialed) = match port {
            HostPort::Fixed(p) => (p, VsockStream::connect_with_cid_port(VMADDR_CID_HOST, p)),
            HostPort::OwnCid => match vsock::get_local_cid() {
                Ok(cid) => (
                    cid,
                    VsockStream::connect_with_cid_port(VMADDR_CID_HOST, cid),
                ),
                Err(e) => (0, Err(e)),
            },
        };
        match dialed {
            Ok(stream) => {
                if failures > 0 {
                    debug!("connected to the host after {failures} failed attempts");
                }
                failures = 0;
                let end = serve_stream(
                    stream,
                    ServeOptions {
                        trusted: true,
                        ..Default::default()
                    },
                );
                let rejected = matches!(end, Ok(ConnEnd::Rejected | ConnEnd::RejectedHost));
                finished("the vsock connection to the host", end, under_init);
                if rejected {
                    // Dialing again would be refused again: do it slowly.
                    thread::sleep(Duration::from_secs(1));
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 50 || failures % 3000 == 0 {
                    log!("still waiting for the host on vsock port {port}: {e}");
                }
                thread::sleep(RETRY);
            }
        }
    }
}

/// Serves one vsock connection.
fn serve_stream(stream: VsockStream, opts: ServeOptions) -> Result<ConnEnd, ConnError> {
    let writer = stream
        .try_clone()
        .map_err(|e| ConnError::Handshake(format!("cannot duplicate the socket: {e}")))?;
    // As a File, the writer gets real vectored writes (writev).
    conn::serve(stream, File::from(OwnedFd::from(writer)), opts)
}

/// Accepts host-initiated connections on [`AGENT_PORT`].
fn listen(listener: VsockListener, under_init: bool) {
    let mut failures: u64 = 0;
    loop {
        match listener.accept() {
            Ok((stream, addr)) => {
                failures = 0;
                debug!("connection from {addr:?}");
                if let Err(e) = spawn_thread("accepted", move || accepted(stream, under_init)) {
                    log!("cannot serve a connection: {e}");
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 1000 == 0 {
                    log!("accept on vsock port {AGENT_PORT} failed: {e}");
                }
                thread::sleep(RETRY);
            }
        }
    }
}

/// Raw transport probes a host may ask for instead of the protocol.
#[derive(Clone, Copy)]
enum RawMode {
    Echo,
    Sink,
    Source,
}

const RAW_MAGICS: [(&[u8; 8], RawMode); 3] = [
    (RAW_ECHO_MAGIC, RawMode::Echo),
    (RAW_SINK_MAGIC, RawMode::Sink),
    (RAW_SOURCE_MAGIC, RawMode::Source),
];

/// Serves a host-initiated connection that shows the VM's token
/// ([`auth`]): a raw probe or the protocol. Anyone else gets nothing.
fn accepted(mut stream: VsockStream, under_init: bool) {
    let admitted = stream.set_read_timeout(Some(auth::AUTH_GRACE)).is_ok()
        && auth::check(&mut stream)
        && stream.set_read_timeout(None).is_ok();
    if !admitted {
        debug!("a connection without the session token was closed");
        return;
    }
    if let Some(mode) = raw_mode(stream.as_fd()) {
        let mut magic = [0u8; RAW_ECHO_MAGIC.len()];
        if stream.read_exact(&mut magic).is_err() {
            return;
        }
        match mode {
            RawMode::Echo => match stream.try_clone() {
                Ok(writer) => conn::echo(&mut stream, &Sender::new(writer)),
                Err(e) => log!("cannot duplicate the socket: {e}"),
            },
            RawMode::Sink => {
                if let Err(e) = rawport::sink(&mut stream) {
                    debug!("raw sink ended: {e}");
                }
            }
            RawMode::Source => {
                if let Err(e) = rawport::source(&mut stream) {
                    debug!("raw source ended: {e}");
                }
            }
        }
        return;
    }
    let end = serve_stream(
        stream,
        ServeOptions {
            allow_echo: true,
            trusted: false,
            splice: false,
        },
    );
    finished("a host-initiated vsock connection", end, under_init);
}

/// Peeks (without consuming) for one of the raw probe magics during
/// [`ECHO_GRACE`].
fn raw_mode(fd: BorrowedFd<'_>) -> Option<RawMode> {
    let deadline = Instant::now() + ECHO_GRACE;
    let mut buf = [0u8; RAW_ECHO_MAGIC.len()];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sys::poll_readable(fd, Some(left)) {
            Ok(true) => {}
            Ok(false) if left.is_zero() => return None,
            Ok(false) => continue,
            Err(_) => return None,
        }
        let Ok((n, _)) = rustix::net::recv(fd, &mut buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)
        else {
            return None;
        };
        if n == 0 {
            return None;
        }
        let candidates: Vec<RawMode> = RAW_MAGICS
            .iter()
            .filter(|(m, _)| buf[..n] == m[..n])
            .map(|(_, mode)| *mode)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        if n == buf.len() {
            return candidates.first().copied();
        }
        // A prefix of a magic: the rest is on its way.
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Serves the virtio-serial port forever.
fn serve_serial(under_init: bool) -> ! {
    loop {
        let port = vports::wait(SERIAL_PORT_NAME);
        let file = match OpenOptions::new().read(true).write(true).open(&port) {
            Ok(file) => file,
            Err(e) => {
                log!("cannot open {}: {e}", port.display());
                thread::sleep(RETRY);
                continue;
            }
        };
        debug!("serving {}", port.display());
        loop {
            let started = Instant::now();
            let writer = match file.try_clone() {
                Ok(w) => w,
                Err(e) => {
                    log!("cannot duplicate {}: {e}", port.display());
                    thread::sleep(RETRY);
                    break;
                }
            };
            // Writing the hello blocks until the host side is connected. Input
            // is not flushed first: after an end of file nothing stale is
            // pending, and a reconnecting host may already have said hello.
            let opts = ServeOptions {
                trusted: true,
                splice: true,
                ..Default::default()
            };
            let end = conn::serve(&file, writer, opts);
            let failed = end.is_err();
            finished("the serial port", end, under_init);
            if failed && !port.exists() {
                log!("{} is gone; looking for the port again", port.display());
                break;
            }
            if started.elapsed() < RETRY {
                thread::sleep(RETRY);
            }
        }
    }
}

/// Developer mode: serves one connection on a reading and a writing
/// descriptor (standard input and output for `--serve-stdio`).
pub fn serve_fds(read_fd: OwnedFd, write_fd: OwnedFd) -> ExitCode {
    let reader = File::from(read_fd);
    let writer = File::from(write_fd);
    match conn::serve(reader, writer, ServeOptions::default()) {
        Ok(end) => {
            debug!("connection ended: {end:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log!("connection dropped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Duplicates a descriptor that must be open (for the developer modes).
pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if !sys::fd_is_open(fd) {
        return Err(Errno::BADF.into());
    }
    // A descriptor number from the command line: borrowing it (for rustix
    // and std alike) needs unsafe, made sound by the check above.
    // SAFETY: fd is open; we only borrow it to duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned()
}

/// Writes a line to standard output (usage and version), ignoring errors.
pub fn print(line: &str) {
    let _ = writeln!(io::stdout(), "{line}");
}
