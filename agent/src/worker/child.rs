//! The worker process itself (`provium-agent --worker-fd N`): serves the
//! ordinary protocol ([`crate::conn::serve`]) on the channel its parent
//! agent handed it.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use rustix::io::FdFlags;
use rustix::process::Signal;

use crate::conn::{self, ServeOptions};
use crate::sys;

/// Worker mode (`--worker-fd N`): serves the channel on descriptor `fd`
/// until the parent closes it. Exit code 0 on a clean end, 1 otherwise.
pub fn serve_channel(fd: RawFd) -> ExitCode {
    if !sys::fd_is_open(fd) {
        log!("worker: descriptor {fd} is not open");
        return ExitCode::from(2);
    }
    // An inherited descriptor number: owning it (for rustix and std alike)
    // needs unsafe, made sound by the check above and the spawn protocol.
    // SAFETY: the descriptor is open and was handed to this process alone.
    let channel = unsafe { OwnedFd::from_raw_fd(fd) };
    // Processes the worker runs must not inherit its channel.
    let _ = rustix::io::fcntl_setfd(&channel, FdFlags::CLOEXEC);
    if rustix::process::getpid().is_init() {
        init_of_namespace();
    }
    let reader = UnixStream::from(channel);
    let writer = match reader.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log!("worker: cannot duplicate the channel: {e}");
            return ExitCode::FAILURE;
        }
    };
    match conn::serve(reader, writer, ServeOptions::default()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log!("worker: channel dropped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// As PID 1 of a new PID namespace the kernel drops signals without a
/// handler, so termination signals get one that exits with 128+signal
/// (what a default death would report).
fn init_of_namespace() {
    extern "C" fn die(sig: std::ffi::c_int) {
        // rustix has no `_exit` outside its runtime module (for libc-less
        // programs); libc's is async-signal-safe.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    }
    for sig in [Signal::TERM, Signal::INT, Signal::HUP] {
        // Signal handlers: rustix does not install them.
        // SAFETY: installs an async-signal-safe handler.
        unsafe { libc::signal(sig.as_raw(), die as *const () as libc::sighandler_t) };
    }
}
