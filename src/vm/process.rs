//! Child processes (QEMU, the vsock daemon) that cannot outlive us.
//!
//! Each child gets `PR_SET_PDEATHSIG(SIGKILL)` (it dies with the rock's runtime
//! thread, i.e. with the Lua process, even on SIGKILL of `lua5.4`), is killed
//! when its guard drops, and is reaped by a task that publishes its exit.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use tokio::process::{ChildStdout, Command};
use tokio::sync::watch;

/// How a child ended, as text for error messages.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}

/// Owns a running child: kills it on drop.
pub struct ChildGuard {
    pid: i32,
    what: &'static str,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl ChildGuard {
    /// Spawns `cmd` (must run on the runtime thread: see `crate::runtime`).
    pub fn spawn(cmd: Command, what: &'static str) -> io::Result<ChildGuard> {
        Ok(Self::spawn_with_stdout(cmd, what)?.0)
    }

    /// Like [`ChildGuard::spawn`], also handing back the child's stdout if it
    /// was piped.
    pub fn spawn_with_stdout(
        cmd: Command,
        what: &'static str,
    ) -> io::Result<(ChildGuard, Option<ChildStdout>)> {
        Self::spawn_keeping(cmd, what, None)
    }

    /// Like [`ChildGuard::spawn_with_stdout`]; the child also inherits
    /// descriptor `keep` (close-on-exec in this process, so that no other
    /// child gets it), under the same number.
    pub fn spawn_keeping(
        mut cmd: Command,
        what: &'static str,
        keep: Option<RawFd>,
    ) -> io::Result<(ChildGuard, Option<ChildStdout>)> {
        // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl, _exit)
        // run between fork and exec.
        let parent = unsafe { libc::getpid() };
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take();
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Some(status.unwrap_or_else(|_| ExitStatus::from_raw(0))));
        });
        Ok((ChildGuard { pid, what, exit }, stdout))
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What this child is ("QEMU", "vhost-device-vsock").
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Its exit status, once it has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// A receiver that sees the exit status.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// Waits (async) until the child has ended.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return status;
            }
            if rx.changed().await.is_err() {
                return ExitStatus::from_raw(0);
            }
        }
    }

    /// Sends `sig` unless the child is known to have ended (its pid could
    /// already belong to someone else then).
    pub fn signal(&self, sig: i32) {
        if self.pid > 0 && self.exited().is_none() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Shared ownership of a guard.
pub type SharedChild = Arc<ChildGuard>;
