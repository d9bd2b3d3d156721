//! Starting a worker process: clone with the requested namespaces, set the
//! credentials, re-execute the agent binary on one end of a socket pair.
//!
//! The agent is multi-threaded, so the child may only make raw system calls
//! between the clone and the exec: everything (C strings, argv, the group
//! list) is prepared before. rustix's calls are such system calls (no
//! allocation, no lock, no errno) when given C strings. Credentials are
//! changed with rustix's per-thread calls (`set_thread_*`: the plain system
//! calls), not libc's wrappers, which would try to broadcast the change to
//! threads that only exist in the parent. The order is: namespaces (by the
//! clone itself; for a mount namespace `/` is then made recursively private so
//! nothing propagates back), `setgroups`, `setgid`, `setuid` (groups and
//! gid first, while we still may), `chdir` (as the new user), stdin and
//! stdout to `/dev/null`, exec. A failing step writes `[step, errno]` to a
//! close-on-exec pipe and exits; the parent reads that pipe, where end of
//! file means the exec succeeded.
//!
//! The worker is cloned rather than forked so that, with a PID namespace,
//! it is PID 1 of the new namespace itself (with `unshare` only its first
//! child would be, and the namespace would die with that child).
//!
//! rustix has no clone, exec or `_exit` (outside its runtime module, meant
//! for libc-less programs): those three stay raw libc calls, and the clone
//! flags are libc's constants; errno constants are the numbers sent to the
//! host.

use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;

use provium_protocol::{Failure, WorkerSpec};
use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, FdFlags};
use rustix::mount::MountPropagationFlags;
use rustix::pipe::PipeFlags;
use rustix::thread::{Gid, Uid};

use crate::error::{bad_request, internal, io_failure, os_failure, strerror};
use crate::sys;

/// The program a worker runs (see [`set_program`]).
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// `argv[0]` of a worker.
const ARGV0: &str = "provium-agent";

/// Makes workers execute `path` instead of `/proc/self/exe` (for tests,
/// whose own executable is a test harness). Only the first call counts.
pub fn set_program(path: impl Into<PathBuf>) {
    let _ = PROGRAM.set(path.into());
}

fn program() -> PathBuf {
    PROGRAM
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// Steps of the child, as reported through the error pipe.
const STEPS: [&str; 8] = [
    "clone",
    "make / private",
    "setgroups",
    "setgid",
    "setuid",
    "chdir",
    "redirect stdio",
    "exec",
];
const STEP_MOUNT: u32 = 1;
const STEP_SETGROUPS: u32 = 2;
const STEP_SETGID: u32 = 3;
const STEP_SETUID: u32 = 4;
const STEP_CHDIR: u32 = 5;
const STEP_STDIO: u32 = 6;
const STEP_EXEC: u32 = 7;

/// Clone flags for the namespace names of a [`WorkerSpec`].
pub fn namespace_flags(names: &[String]) -> Result<libc::c_int, Failure> {
    let mut flags = 0;
    for name in names {
        flags |= match name.as_str() {
            "mount" => libc::CLONE_NEWNS,
            "net" => libc::CLONE_NEWNET,
            "pid" => libc::CLONE_NEWPID,
            "ipc" => libc::CLONE_NEWIPC,
            "uts" => libc::CLONE_NEWUTS,
            other => {
                return Err(bad_request(format!(
                "spawn_worker: unknown namespace `{other}` (expected mount, net, pid, ipc or uts)"
            )))
            }
        };
    }
    Ok(flags)
}

/// Everything the child needs, prepared before the clone.
struct Prepared {
    exe: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    cwd: Option<CString>,
    groups: Option<Vec<Gid>>,
    gid: Option<Gid>,
    uid: Option<Uid>,
    mount_private: bool,
    devnull: OwnedFd,
    channel: OwnedFd,
    err_w: OwnedFd,
}

/// Starts a worker; returns its pid and the agent's end of its channel.
pub fn start(spec: &WorkerSpec) -> Result<(i32, UnixStream), Failure> {
    let flags = namespace_flags(&spec.unshare)?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| io_failure(&e))?;
    // Above the standard streams, which the child redirects.
    let channel = dup_above_stdio(&OwnedFd::from(theirs))?;
    let (err_r, err_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(os_failure)?;
    let devnull = rustix::fs::open(c"/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(os_failure)?;
    let exe = sys::cstring(std::os::unix::ffi::OsStrExt::as_bytes(
        program().as_os_str(),
    ))
    .map_err(|e| io_failure(&e))?;
    let argv: Vec<CString> = [
        ARGV0.to_owned(),
        "--worker-fd".to_owned(),
        channel.as_raw_fd().to_string(),
    ]
    .into_iter()
    .map(|a| CString::new(a).map_err(|e| internal(e.to_string())))
    .collect::<Result<_, _>>()?;
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let cwd = spec
        .cwd
        .as_ref()
        .map(|c| sys::cstring(c))
        .transpose()
        .map_err(|e| io_failure(&e))?;
    let uid_now = rustix::process::getuid().as_raw();
    let gid_now = rustix::process::getgid().as_raw();
    let changes_ids =
        spec.uid.is_some_and(|u| u != uid_now) || spec.gid.is_some_and(|g| g != gid_now);
    // `from_raw_unchecked` passes any number on (-1 included), as before:
    // the kernel judges it.
    let groups = match &spec.groups {
        Some(groups) => Some(groups.iter().map(|&g| Gid::from_raw_unchecked(g)).collect()),
        None if changes_ids => Some(Vec::new()),
        None => None,
    };
    let prepared = Prepared {
        exe,
        _argv: argv,
        argv_ptrs,
        cwd,
        groups,
        gid: spec.gid.map(Gid::from_raw_unchecked),
        uid: spec.uid.map(Uid::from_raw_unchecked),
        mount_private: flags & libc::CLONE_NEWNS != 0,
        devnull,
        channel,
        err_w,
    };

    // rustix has no clone: a raw one, fork-like.
    // SAFETY: a fork-like clone (no shared memory, no new stack); the child
    // only runs `child`, which makes raw system calls and execs or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // `child` is unsafe to call anywhere but in the cloned child.
        // SAFETY: we are the freshly cloned child.
        unsafe { child(&prepared) }
    }
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        return Err(Failure::os(
            errno,
            format!("spawn_worker: clone: {}", strerror(errno)),
        ));
    }
    let pid = pid as i32;
    drop(prepared);
    match read_report(&err_r) {
        None => Ok((pid, ours)),
        Some((step, errno)) => {
            let _ = sys::wait_pid(pid);
            let step = STEPS.get(step as usize).copied().unwrap_or("setup");
            Err(Failure::os(
                errno,
                format!("spawn_worker: {step}: {}", strerror(errno)),
            ))
        }
    }
}

/// Duplicates a descriptor to one above 2, close-on-exec.
fn dup_above_stdio(fd: &OwnedFd) -> Result<OwnedFd, Failure> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(os_failure)
}

/// Reads the child's failure report; `None` when the exec succeeded.
fn read_report(err_r: &OwnedFd) -> Option<(u32, i32)> {
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match sys::read(err_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    if got < report.len() {
        return None;
    }
    let step = u32::from_le_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    Some((step, errno))
}

/// Reports a failed step to the parent and exits. Only for the cloned child.
fn fail(p: &Prepared, step: u32, errno: i32) -> ! {
    let mut report = [0u8; 8];
    report[..4].copy_from_slice(&step.to_le_bytes());
    report[4..].copy_from_slice(&errno.to_le_bytes());
    let _ = rustix::io::write(&p.err_w, &report);
    // rustix has no `_exit` (outside its runtime module); libc's ends the
    // child at once, without the parent's atexit handlers or std cleanup.
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(127) }
}

/// The set-up steps of the cloned child, up to the exec; a failure names
/// its step. Only for the cloned child: every call is one rustix system
/// call on data prepared before the clone (no allocation, no lock).
fn set_up(p: &Prepared) -> Result<(), (u32, Errno)> {
    let at = |step: u32| move |e: Errno| (step, e);
    if p.mount_private {
        let flags = MountPropagationFlags::REC | MountPropagationFlags::PRIVATE;
        rustix::mount::mount_change(c"/", flags).map_err(at(STEP_MOUNT))?;
    }
    if let Some(groups) = &p.groups {
        rustix::thread::set_thread_groups(groups).map_err(at(STEP_SETGROUPS))?;
    }
    if let Some(gid) = p.gid {
        rustix::thread::set_thread_gid(gid).map_err(at(STEP_SETGID))?;
    }
    if let Some(uid) = p.uid {
        rustix::thread::set_thread_uid(uid).map_err(at(STEP_SETUID))?;
    }
    if let Some(cwd) = &p.cwd {
        rustix::process::chdir(cwd.as_c_str()).map_err(at(STEP_CHDIR))?;
    }
    rustix::stdio::dup2_stdin(&p.devnull)
        .and_then(|()| rustix::stdio::dup2_stdout(&p.devnull))
        .and_then(|()| rustix::io::fcntl_setfd(&p.channel, FdFlags::empty()))
        .map_err(at(STEP_STDIO))
}

/// The cloned child: sets up and execs the worker, or reports and exits.
///
/// # Safety
/// Only for the cloned child: raw system calls only (no allocation, no
/// locks), since other threads of the parent may have held them.
unsafe fn child(p: &Prepared) -> ! {
    if let Err((step, errno)) = set_up(p) {
        fail(p, step, errno.raw_os_error());
    }
    // rustix has no exec (outside its runtime module): libc's execv.
    libc::execv(p.exe.as_ptr(), p.argv_ptrs.as_ptr());
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    fail(p, STEP_EXEC, errno)
}
