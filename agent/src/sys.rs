//! Thin safe wrappers around the system calls the agent needs.
//!
//! The calls go through `rustix` (direct system calls, typed flags). The
//! wrappers add what the call sites share: `EINTR` retries, `i32` pids, and
//! errors as [`io::Error`]: rustix's `Errno` converts with `From`, keeping
//! the very errno (`raw_os_error`) the host receives. What rustix does not
//! cover stays a raw `libc` call, each with its reason above it.

use std::ffi::{c_int, CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, Timespec};
use rustix::fs::{Mode, OFlags, Stat};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Setter, Updater};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitOptions};
use rustix::system::RebootCommand;

/// The error of a byte string with a NUL byte: `InvalidInput`, no errno
/// (the host gets a bad request, not an OS failure).
fn nul_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "string contains an unexpected NUL byte",
    )
}

/// Converts a byte string to a C string (a NUL byte is an `InvalidInput` error).
pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| nul_error())
}

/// A pid as rustix takes it; not a positive number is `EINVAL` (what the
/// kernel answers `pidfd_open` and `waitid` for one).
fn to_pid(raw: i32) -> io::Result<Pid> {
    if raw <= 0 {
        return Err(Errno::INVAL.into());
    }
    Pid::from_raw(raw).ok_or_else(|| Errno::INVAL.into())
}

// The `ifreq` layout and the `SIOC[GS]IFFLAGS`/`IFF_*` numbers are the
// kernel's interface-ioctl ABI: libc's constants are used as plain numbers.
const IFNAMSIZ: usize = libc::IFNAMSIZ;
const SIOCGIFFLAGS: Opcode = libc::SIOCGIFFLAGS as Opcode;
const SIOCSIFFLAGS: Opcode = libc::SIOCSIFFLAGS as Opcode;
const IFF_UP_RUNNING: i16 = (libc::IFF_UP | libc::IFF_RUNNING) as i16;

/// The `ifreq` layout used by `SIOCGIFFLAGS`/`SIOCSIFFLAGS` (40 bytes on Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// Sets `IFF_UP` on a network interface (e.g. `lo`).
pub fn interface_up(name: &str) -> io::Result<()> {
    let mut req = IfReqFlags {
        name: [0; IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    if name.len() >= IFNAMSIZ {
        return Err(Errno::INVAL.into());
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // rustix has no typed interface-flags ioctl: its generic `ioctl` is
    // unsafe because only the caller knows the `ifreq` layout is right.
    // SAFETY: SIOCGIFFLAGS reads and writes an `ifreq`, which `req` is.
    unsafe { rustix::ioctl::ioctl(&sock, Updater::<SIOCGIFFLAGS, _>::new(&mut req)) }?;
    req.flags |= IFF_UP_RUNNING;
    // As above (rustix has no typed interface-flags ioctl).
    // SAFETY: SIOCSIFFLAGS reads an `ifreq`, which `req` is.
    unsafe { rustix::ioctl::ioctl(&sock, Setter::<SIOCSIFFLAGS, _>::new(req)) }?;
    Ok(())
}

/// Powers the machine off (`reboot(RB_POWER_OFF)`); returns only on failure.
pub fn power_off() -> io::Error {
    match rustix::system::reboot(RebootCommand::PowerOff) {
        Ok(()) => io::Error::other("reboot(RB_POWER_OFF) returned"),
        Err(e) => e.into(),
    }
}

/// The signals BusyBox's `halt`, `poweroff` and `reboot` send to PID 1.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::USR1, Signal::USR2, Signal::TERM];

/// PID 1's handler for [`STOP_SIGNALS`]: sync and power off at once
/// (rustix makes both as plain system calls, async-signal-safe; doing it
/// here leaves no race with a `waitpid` about to block).
extern "C" fn on_stop_signal(_sig: c_int) {
    rustix::fs::sync();
    let _ = rustix::system::reboot(RebootCommand::PowerOff);
}

/// Makes `halt`, `poweroff` and `reboot` (without `-f`) power the VM off.
/// The kernel delivers to PID 1 only signals it has a handler for.
pub fn handle_stop_signals() -> io::Result<()> {
    for sig in STOP_SIGNALS {
        // Signal handlers: rustix does not install them (libc's sigaction
        // supplies the restorer the kernel needs).
        // SAFETY: sigaction with a zeroed struct and a plain function
        // handler; the mask is emptied before use.
        let ok = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig.as_raw(), &sa, std::ptr::null_mut()) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restores the default action of [`STOP_SIGNALS`] (in children of PID 1:
/// a `SIGTERM` to the op server must end it, not the VM).
pub fn default_stop_signals() {
    for sig in STOP_SIGNALS {
        // Signal dispositions: rustix does not set them (libc keeps its own
        // view of the handlers).
        // SAFETY: resetting a disposition to SIG_DFL.
        unsafe { libc::signal(sig.as_raw(), libc::SIG_DFL) };
    }
}

/// `uname -r`: the kernel release.
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Outcome of [`fork`].
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// `fork(2)`. Only call it while the process has a single thread.
pub fn fork() -> io::Result<Forked> {
    // rustix has no fork (only `runtime::kernel_fork`, which skips libc's
    // at-fork bookkeeping the child's std still relies on).
    // SAFETY: the caller guarantees the process is single-threaded.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Puts the calling process under `SCHED_IDLE`.
pub fn idle_priority() -> io::Result<()> {
    // rustix has no sched_setscheduler.
    // SAFETY: sched_param is plain integers (musl's has more fields than
    // glibc's), for which all zeroes is valid: priority 0, as SCHED_IDLE wants.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling process; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signalled(i32),
}

impl WaitStatus {
    /// An exit or a death by signal; `None` for other changes (stopped,
    /// continued), which the waits here do not ask for.
    fn of(status: rustix::process::WaitStatus) -> Option<WaitStatus> {
        match status.exit_status() {
            Some(code) => Some(WaitStatus::Exited(code)),
            None => status.terminating_signal().map(WaitStatus::Signalled),
        }
    }
}

/// Waits for any child (`waitpid(-1)`), retrying on `EINTR`.
pub fn wait_any() -> io::Result<(i32, WaitStatus)> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) => {
                if let Some(how) = WaitStatus::of(status) {
                    return Ok((pid.as_raw_pid(), how));
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reaps `pid` (`waitpid(pid, 0)`), retrying on `EINTR`.
pub fn wait_pid(pid: i32) -> io::Result<WaitStatus> {
    let target = to_pid(pid)?;
    loop {
        match rustix::process::waitpid(Some(target), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(how) = WaitStatus::of(status) {
                    return Ok(how);
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `sig` to the process group `pgid` and to the process `pgid` itself
/// (in case it left the group). Errors (already gone) are ignored.
pub fn kill_group(pgid: i32, sig: Signal) {
    if pgid <= 1 {
        return;
    }
    let Some(pgid) = Pid::from_raw(pgid) else {
        return;
    };
    let _ = rustix::process::kill_process_group(pgid, sig);
    let _ = rustix::process::kill_process(pgid, sig);
}

/// `kill(2)` with a signal number from the host; `ESRCH` (already gone)
/// counts as success.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // Host-chosen signal numbers (0, real-time, invalid ones the kernel
    // answers with EINVAL) do not fit rustix's `Signal`, which holds only
    // valid signals: the number goes to kill(2) as it is.
    // SAFETY: plain system call.
    if unsafe { libc::kill(pid, sig) } == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(Errno::SRCH.raw_os_error()) {
            return Err(err);
        }
    }
    Ok(())
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(
        to_pid(pid)?,
        PidfdFlags::empty(),
    )?)
}

/// Whether `pid` has exited (it stays a zombie: `waitid` with `WNOWAIT`).
pub fn has_exited(pid: i32) -> io::Result<bool> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    Ok(rustix::process::waitid(WaitId::Pid(to_pid(pid)?), options)?.is_some())
}

/// Whether file descriptor `fd` is open.
pub fn fd_is_open(fd: RawFd) -> bool {
    // Probes a number that may name no open descriptor: rustix takes only
    // `BorrowedFd`s, which must be open, so this fcntl stays raw.
    // SAFETY: F_GETFD has no side effects.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Opens `path` read-write without `O_CLOEXEC`, so it lands on the lowest free
/// descriptor (used to give PID 1 its standard streams, which stay open).
pub fn open_inheritable(path: &CStr) -> io::Result<RawFd> {
    let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::NOCTTY, Mode::empty())?;
    Ok(fd.into_raw_fd())
}

/// A poll timeout in milliseconds as a `Timespec` (`None` = forever),
/// rounded up so a short remaining time never turns into a busy loop.
fn poll_timeout(timeout: Option<Duration>) -> Option<Timespec> {
    timeout.map(|d| {
        let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i64;
        Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        }
    })
}

/// `poll(2)` on several descriptors; returns how many have events (0 on
/// timeout). An interrupted poll counts as a timeout-free wake-up with no
/// events, so callers simply loop.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    match rustix::event::poll(fds, poll_timeout(timeout).as_ref()) {
        Ok(n) => Ok(n),
        Err(Errno::INTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Waits until `fd` is readable (or has hung up); `None` waits forever.
/// Returns false on timeout.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = [PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::IN)];
    Ok(poll(&mut pfd, timeout)? > 0)
}

/// Whether a polled descriptor reported any event.
pub fn has_events(fd: &PollFd<'_>) -> bool {
    !fd.revents().is_empty()
}

/// A non-blocking, close-on-exec `eventfd(2)` starting at 0.
pub fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds 1 to an eventfd's counter (makes it readable). Errors (a counter
/// at its maximum) are ignored: the descriptor is readable either way.
pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// `open(2)` with explicit flags and creation mode. A path with a NUL byte
/// is an `InvalidInput` error (not `EINVAL`); a short path is made a C
/// string on the stack, without allocating.
pub fn open(path: &[u8], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    if path.contains(&0) {
        return Err(nul_error());
    }
    Ok(rustix::fs::open(path, flags, mode)?)
}

/// `fstat(2)`.
pub fn fstat(fd: impl AsFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// Adds `O_NONBLOCK` to a descriptor's status flags.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    Ok(rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?)
}

/// One `read(2)`, retried on `EINTR`.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_fd();
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(Errno::INTR) => {}
            other => return Ok(other?),
        }
    }
}

/// One `write(2)`, retried on `EINTR`.
pub fn write(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    let fd = fd.as_fd();
    loop {
        match rustix::io::write(fd, buf) {
            Err(Errno::INTR) => {}
            other => return Ok(other?),
        }
    }
}
