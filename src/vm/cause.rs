//! Failure attribution: why a VM's agent connection ended, told from what
//! the host can see (the guest console, QEMU's exit, the vsock daemon's
//! exit), rather than from the connection alone ("the agent closed the
//! connection" says nothing when the guest kernel panicked).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::console::{Console, HALTED};
use super::process::{describe_exit, ChildGuard};

/// How long a connection's end waits for QEMU to end too (a panicking or
/// powering-off guest drops the connection a moment before QEMU exits).
const QEMU_GRACE: Duration = Duration::from_millis(1000);
/// Time for the console task to take QEMU's last output.
const CONSOLE_DRAIN: Duration = Duration::from_millis(50);
/// How long a failure message waits for QEMU's monitor.
const QMP_PATIENCE: Duration = Duration::from_secs(2);
/// Console lines searched for the guest's last words.
pub const CONSOLE_LINES: usize = 80;

/// What the host can see of a running VM.
#[derive(Clone)]
pub struct Witnesses {
    /// The QEMU process.
    pub qemu: Arc<ChildGuard>,
    /// The exit status of the vhost-device-vsock daemon once it has ended;
    /// `None` without a daemon (kernel vsock, serial transport).
    pub daemon: Option<watch::Receiver<Option<ExitStatus>>>,
    /// The guest's console, whose last lines tell a panic or a power-off.
    pub console: Arc<Console>,
    /// QEMU's stderr file.
    pub stderr: PathBuf,
    /// QEMU's monitor and its socket path, to ask the run state.
    pub monitor: Option<(super::SharedMonitor, PathBuf)>,
}

impl Witnesses {
    /// Why the connection ended, `raw` being what the connection itself
    /// saw. Blocks up to `QEMU_GRACE` (1 s) for QEMU to end.
    pub fn explain(&self, raw: &str) -> String {
        let deadline = Instant::now() + QEMU_GRACE;
        while self.qemu.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.qemu.exited().is_some() {
            std::thread::sleep(CONSOLE_DRAIN);
        }
        let daemon = self.daemon.as_ref().and_then(|d| *d.borrow());
        attribute(
            raw,
            &self.console.tail(CONSOLE_LINES),
            self.qemu.exited(),
            daemon,
            &std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

impl Witnesses {
    /// Why the agent went silent for `silence` while a call waited: what
    /// QEMU's process and the console say.
    pub fn stalled(&self, silence: Duration) -> String {
        let head = format!(
            "the guest stopped answering: nothing from the agent for {:.0} s",
            silence.as_secs_f64()
        );
        if self.qemu.exited().is_some() {
            return self.explain(&head);
        }
        let console = self.console.tail(CONSOLE_LINES);
        let daemon = self.daemon.as_ref().and_then(|d| *d.borrow());
        let told = attribute(&head, &console, None, daemon, "");
        if told != head {
            return told;
        }
        let pid = self.qemu.pid();
        if qemu_is_stopped(pid) {
            return format!(
                "{head}; QEMU (pid {pid}) is stopped (SIGSTOP, or a debugger holds it)"
            );
        }
        if console.contains(HALTED) {
            return format!("{head}; the guest halted");
        }
        let state = match self.qemu_run_state() {
            Some(s) => format!(", QEMU reports the VM {s}"),
            None => String::new(),
        };
        format!(
            "{head}; QEMU (pid {pid}) is running{state}: the guest or its agent is frozen, or \
             the host is overloaded (the VM option stall_timeout sets how long to wait)"
        )
    }

    /// QEMU's run state (`running`, `paused`, `guest-panicked`...), if its
    /// monitor answers quickly and is not busy with another command.
    fn qemu_run_state(&self) -> Option<String> {
        let (monitor, path) = self.monitor.as_ref()?;
        let mut guard = monitor.try_lock().ok()?;
        if guard.is_none() {
            *guard = super::qmp::Monitor::connect(path, Instant::now() + QMP_PATIENCE).ok();
        }
        guard.as_mut()?.status_within(QMP_PATIENCE).ok()
    }
}

/// Whether process `pid` is stopped (state `T`, or `t` under a tracer).
pub fn qemu_is_stopped(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s == 'T' || s == 't')
}

/// The state letter of `/proc/<pid>/stat`.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Whether the console shows the guest ending itself cleanly (power-off,
/// halt, reboot): QEMU's end is then the VM's shutdown, not a death.
pub fn guest_ended(console: &str) -> bool {
    console.contains("reboot: Power down")
        || console.contains(HALTED)
        || console.contains("reboot: Restarting system")
}

/// What the guest kernel's panic line says, when the console has one.
pub fn kernel_panic(console: &str) -> Option<&str> {
    let line = console
        .lines()
        .find(|l| l.contains("Kernel panic - not syncing"))?;
    Some(
        line.split_once("Kernel panic - not syncing")
            .map(|(_, rest)| rest.trim_start_matches([':', ' ']).trim())
            .unwrap_or(""),
    )
}

/// The attribution itself (pure, for tests): the guest's kernel first, then
/// the vsock daemon, then QEMU, then the connection's own words.
pub fn attribute(
    raw: &str,
    console: &str,
    qemu: Option<ExitStatus>,
    daemon: Option<ExitStatus>,
    qemu_stderr: &str,
) -> String {
    if let Some(what) = kernel_panic(console) {
        return format!("the guest kernel panicked: {what}");
    }
    if let Some(status) = daemon {
        return format!(
            "vhost-device-vsock (the VM's vsock device) {}",
            describe_exit(&status)
        );
    }
    if let Some(status) = qemu {
        if status.code() == Some(0) {
            if console.contains("reboot: Power down") {
                return "the guest powered off".into();
            }
            if console.contains("reboot: Restarting system") {
                return "the guest rebooted (QEMU ends on a reboot)".into();
            }
            if console.contains(HALTED) {
                return "the guest halted (provium then ended QEMU)".into();
            }
        }
        let mut s = format!("QEMU {}", describe_exit(&status));
        if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
            if let Some(name) = signal_name(sig) {
                s.push_str(&format!(" ({name})"));
            }
        }
        if let Some(last) = qemu_stderr.trim().lines().last() {
            s.push_str(&format!(": {last}"));
        }
        return s;
    }
    raw.to_string()
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGBUS => "SIGBUS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const RAW: &str = "the agent closed the connection";

    #[test]
    fn a_kernel_panic_is_named_before_anything_else() {
        let console = "[    1.2] foo\n[    1.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n";
        let got = attribute(RAW, console, Some(ExitStatus::from_raw(0)), None, "");
        assert_eq!(
            got,
            "the guest kernel panicked: Attempted to kill init! exitcode=0x00000100"
        );
    }

    #[test]
    fn the_daemon_then_qemu_then_the_connection() {
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(
            attribute(RAW, "", None, Some(killed), ""),
            "vhost-device-vsock (the VM's vsock device) was killed by signal 9"
        );
        assert_eq!(
            attribute(RAW, "", Some(killed), None, "qemu: terminating\n"),
            "QEMU was killed by signal 9 (SIGKILL): qemu: terminating"
        );
        assert_eq!(
            attribute(
                RAW,
                "[ 3.1] reboot: Power down\n",
                Some(ExitStatus::from_raw(0)),
                None,
                ""
            ),
            "the guest powered off"
        );
        assert_eq!(attribute(RAW, "", None, None, ""), RAW);
        assert_eq!(
            attribute(
                RAW,
                "[ 9.0] reboot: System halted\n",
                Some(ExitStatus::from_raw(0)),
                None,
                ""
            ),
            "the guest halted (provium then ended QEMU)"
        );
    }

    #[test]
    fn our_own_process_is_not_stopped_and_clean_ends_are_told_apart() {
        assert!(!qemu_is_stopped(std::process::id() as i32));
        assert!(proc_state(std::process::id() as i32).is_some());
        assert!(guest_ended("x\n[ 1.0] reboot: Power down\n"));
        assert!(guest_ended("[ 1.0] reboot: System halted"));
        assert!(!guest_ended("[ 1.0] Kernel panic - not syncing: boom"));
    }
}
