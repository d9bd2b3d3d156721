//! PID 1 duties.
//!
//! PID 1 sets the machine up (mounts, kernel modules, hostname, loopback,
//! environment, syslogd), then forks: the child becomes the op server
//! ([`crate::server`]); the parent stays PID 1 and reaps every child,
//! orphans included.
//!
//! **Power-off mechanism:** the server asks for a power-off by exiting with
//! [`crate::config::POWEROFF_EXIT_CODE`] (after replying to the host and calling `sync`).
//! PID 1 then syncs again and calls `reboot(RB_POWER_OFF)`. Any other end of
//! the server is unexpected: it is logged and the server is restarted. PID 1
//! never exits (that would panic the kernel): on a fatal error, and on a
//! panic, it powers off.

use std::ffi::CStr;
use std::fs::{self, File};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::mount::MountFlags;

use crate::config::{Config, POWEROFF_EXIT_CODE};
use crate::server::{self, ServerEnv};
use crate::sys::{self, Forked, WaitStatus};

/// Directory holding the kernel modules to load and their `order` file.
pub const MODULE_DIR: &str = "/lib/modules/provium";

/// Modules loaded after the op server started, by a child of PID 1 at idle
/// priority, so that they cost the boot nothing: the free-page-reporting
/// balloon driver (30-60 ms of a TCG boot when loaded with the others).
pub const LATE_MODULES: &[&str] = &["virtio_balloon"];

/// BusyBox syslogd, started in the foreground (`-n`) as a child of PID 1.
const SYSLOGD: &str = "/sbin/syslogd";

/// The socket syslogd creates.
const SYSLOG_SOCKET: &str = "/dev/log";

/// `PATH` of every guest process.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs PID 1; never returns.
pub fn run() -> ! {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let (cfg, env) = setup();
        supervise(&cfg, &env)
    }));
    if outcome.is_err() {
        log!("PID 1 panicked; powering off");
    }
    power_off()
}

/// Prepares the machine; returns what the server needs.
fn setup() -> (Config, ServerEnv) {
    mount(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        Some(c"mode=0755"),
    );
    ensure_stdio();
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("proc", "/proc", "proc", nosuid_nodev_noexec, None);
    mount("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None);
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"gid=5,mode=0620,ptmxmode=0666"),
    );
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        nosuid_nodev,
        Some(c"mode=1777"),
    );
    mount("tmpfs", "/tmp", "tmpfs", nosuid_nodev, Some(c"mode=1777"));
    mount("tmpfs", "/run", "tmpfs", nosuid_nodev, Some(c"mode=0755"));
    dev_links();

    let cfg = Config::load();
    crate::log::set_debug(cfg.debug);
    load_modules(Path::new(MODULE_DIR), &cfg, Phase::Boot);
    full_console_log();
    set_hostname();
    if let Err(e) = sys::interface_up("lo") {
        log!("cannot bring lo up: {e}");
    }
    std::env::set_var("PATH", PATH);
    std::env::set_var("HOME", "/root");
    let env = ServerEnv {
        under_init: true,
        wait_for: start_syslogd().then(|| PathBuf::from(SYSLOG_SOCKET)),
    };
    (cfg, env)
}

/// Console log level from here on: everything but debug messages.
const CONSOLE_LOGLEVEL: std::ffi::c_int = 7;

/// Lets every kernel message but debug ones reach the console from now on.
///
/// The host boots with `quiet`: printing the boot chatter (~230 lines) on
/// the serial console costs 0.11 s of a 1.8 s TCG boot. After boot, what
/// the kernel says (warnings, oopses, module messages) is what a failing test
/// needs in its console tail, so the level goes up. A `loglevel=` on the
/// kernel command line is the user's choice and stays.
fn full_console_log() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline
        .split_whitespace()
        .any(|w| w.starts_with("loglevel="))
    {
        return;
    }
    // SYSLOG_ACTION_CONSOLE_LEVEL (8) takes the level as its length argument.
    // Stays raw: rustix has no syslog(2)/klogctl.
    // SAFETY: this action reads no buffer; a null pointer is allowed.
    if unsafe { libc::klogctl(8, std::ptr::null_mut(), CONSOLE_LOGLEVEL) } == -1 {
        log!(
            "cannot raise the console log level: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Mounts a file system, creating the mount point; errors are logged
/// (an already mounted file system is fine).
fn mount(source: &str, target: &str, fstype: &str, flags: MountFlags, data: Option<&CStr>) {
    if let Err(e) = fs::create_dir_all(target) {
        log!("cannot create {target}: {e}");
    }
    match rustix::mount::mount(source, target, fstype, flags, data) {
        Ok(()) => {}
        Err(Errno::BUSY) => debug!("{target} already mounted"),
        Err(e) => log!("cannot mount {fstype} on {target}: {e}"),
    }
}

/// Gives PID 1 standard streams on the console if the kernel could not
/// (no `/dev/console` in the initramfs).
fn ensure_stdio() {
    for fd in 0..3 {
        if sys::fd_is_open(fd) {
            continue;
        }
        let console: &CStr = c"/dev/console";
        if sys::open_inheritable(console).is_err() {
            let _ = sys::open_inheritable(c"/dev/null");
        }
    }
}

/// The `/dev` links devtmpfs does not create.
fn dev_links() {
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => log!("cannot link {link}: {e}"),
        }
    }
}

/// Which of the listed modules a [`load_modules`] call loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// All but [`LATE_MODULES`].
    Boot,
    /// Only [`LATE_MODULES`].
    Late,
}

/// Loads the modules listed in `dir/order` (one file name per line, files
/// in `dir`) that belong to `phase`, with `finit_module`. Already loaded
/// modules are fine.
///
/// Modules the machine cannot use are skipped, because every module costs
/// boot time (tens of ms each under TCG): the virtio PCI transport when the
/// machine has no PCI devices (QEMU's microvm), and virtio_console unless the
/// protocol runs over a virtio-serial port or the machine has a console port
/// ([`Config::needs_virtio_console`]).
pub fn load_modules(dir: &Path, cfg: &Config, phase: Phase) {
    let has_pci = fs::read_dir("/sys/bus/pci/devices")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let order = match fs::read_to_string(dir.join("order")) {
        Ok(order) => order,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!("no {}/order: no modules to load", dir.display());
            return;
        }
        Err(e) => {
            log!("cannot read {}/order: {e}", dir.display());
            return;
        }
    };
    for name in order.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let late = LATE_MODULES
            .iter()
            .any(|m| name.strip_suffix(".ko").unwrap_or(name) == *m);
        if late != (phase == Phase::Late) {
            continue;
        }
        let unneeded = (name.starts_with("virtio_pci") && !has_pci)
            || (name.starts_with("virtio_console") && !cfg.needs_virtio_console());
        if unneeded {
            debug!("skipping {name}: not needed on this machine");
            continue;
        }
        let path = dir.join(name);
        let loaded = File::open(&path).and_then(|module| {
            rustix::system::finit_module(&module, c"", 0).map_err(io::Error::from)
        });
        match loaded {
            Ok(()) => debug!("loaded {name}"),
            Err(e) if Errno::from_io_error(&e) == Some(Errno::EXIST) => {
                debug!("{name} already loaded")
            }
            Err(e) => log!("cannot load module {}: {e}", path.display()),
        }
    }
}

/// Sets the hostname from `/etc/hostname` (first line, trimmed).
fn set_hostname() {
    let Ok(text) = fs::read_to_string("/etc/hostname") else {
        return;
    };
    let name = text.lines().next().unwrap_or("").trim();
    if name.is_empty() {
        return;
    }
    if let Err(e) = rustix::system::sethostname(name.as_bytes()) {
        log!("cannot set the hostname to {name:?}: {e}");
    }
}

/// Starts syslogd in the foreground (PID 1 reaps it); false when absent.
fn start_syslogd() -> bool {
    if !Path::new(SYSLOGD).exists() {
        log!("{SYSLOGD} not found; no syslog");
        return false;
    }
    if let Err(e) = fs::create_dir_all("/var/log") {
        log!("cannot create /var/log: {e}");
    }
    let spawned = Command::new(SYSLOGD)
        .arg("-n")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    match spawned {
        // The child is reaped by the supervisor loop.
        Ok(_child) => true,
        Err(e) => {
            log!("cannot start {SYSLOGD}: {e}");
            false
        }
    }
}

/// Forks the op server; powers off if that keeps failing.
fn start_server(cfg: &Config, env: &ServerEnv) -> (i32, Instant) {
    for _ in 0..5 {
        match sys::fork() {
            Ok(Forked::Parent(pid)) => return (pid, Instant::now()),
            Ok(Forked::Child) => server_child(cfg, env),
            Err(e) => {
                log!("cannot fork the op server: {e}");
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
    log!("giving up on starting the op server");
    power_off()
}

/// Forks a child that loads [`LATE_MODULES`] at idle priority (`SCHED_IDLE`:
/// it runs only when the guest has nothing else to run) and exits; PID 1
/// reaps it like any child.
fn start_late_modules(cfg: &Config) {
    match sys::fork() {
        Ok(Forked::Parent(_)) => {}
        Ok(Forked::Child) => {
            if let Err(e) = sys::idle_priority() {
                debug!("cannot lower the late module loader's priority: {e}");
            }
            load_modules(Path::new(MODULE_DIR), cfg, Phase::Late);
            std::process::exit(0)
        }
        Err(e) => log!("cannot fork the late module loader: {e}"),
    }
}

/// The forked child: runs the server, never returns to PID 1's code.
fn server_child(cfg: &Config, env: &ServerEnv) -> ! {
    sys::default_stop_signals();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| server::run(cfg, env)));
    std::process::exit(if outcome.is_err() { 101 } else { 1 })
}

/// Reaps every child forever; restarts the server when it dies, powers off
/// when it asks to.
fn supervise(cfg: &Config, env: &ServerEnv) -> ! {
    if let Err(e) = sys::handle_stop_signals() {
        log!("cannot handle halt/poweroff/reboot signals: {e}");
    }
    let (mut server_pid, mut started) = start_server(cfg, env);
    start_late_modules(cfg);
    loop {
        match sys::wait_any() {
            Ok((pid, status)) if pid == server_pid => {
                if status == WaitStatus::Exited(POWEROFF_EXIT_CODE) {
                    power_off();
                }
                log!("the op server (pid {pid}) ended unexpectedly ({status:?}); restarting it");
                if started.elapsed() < Duration::from_secs(1) {
                    thread::sleep(Duration::from_millis(500));
                }
                (server_pid, started) = start_server(cfg, env);
            }
            Ok((pid, status)) => debug!("reaped pid {pid} ({status:?})"),
            Err(e) => {
                // ECHILD cannot happen while the server lives; be safe anyway.
                log!("waitpid: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Syncs and powers off; never returns.
pub fn power_off() -> ! {
    log!("powering off");
    rustix::fs::sync();
    let err = sys::power_off();
    log!("power-off failed: {err}");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
