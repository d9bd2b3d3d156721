//! The VM backend: QEMU plus the device that carries the agent's connection,
//! started and owned by the rock.
//!
//! [`Machine::boot`] starts everything, waits for the agent to dial in and
//! returns a running machine with a live [`Client`]; [`Machine::restore`]
//! does the same from a snapshot ([`snapshot`]). A monitor task watches
//! QEMU: if it exits, the client is closed so that every blocked call wakes
//! up with what happened.
//!
//! Transports: vsock (kernel vhost-vsock, or a `vhost-device-vsock` daemon
//! per VM) or a virtio-serial port ([`Transport`]). QEMU cannot migrate a
//! vhost-user device, so where vsock would need the daemon the default is
//! the serial port: it snapshots, and under TCG it is also the faster of the
//! two (see BENCHMARKS.md).

pub mod accel;
pub mod cause;
pub mod console;
pub mod host;
pub mod memory;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod rundir;
pub mod snapshot;
pub mod tsc;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provium_protocol::{self as proto, Op};
use tokio::process::Command;

use crate::transport::{self, AgentListener, Client, TransportError};
use accel::Accel;
use console::Console;
use memory::GuestMemory;
use process::ChildGuard;
use qemu::Channel;
use qmp::{Monitor, QmpError};
use rundir::RunDir;
use snapshot::SnapshotMeta;
use vsock::{VhostUserDaemon, VsockKind};

/// Errors of the VM backend.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// bad configuration
    #[error("{0}")]
    Config(String),
    /// a helper program could not be started
    #[error("cannot start {0}: {1}")]
    Spawn(&'static str, std::io::Error),
    /// an infrastructure failure (QEMU died, timeout, ...)
    #[error("{0}")]
    Infra(String),
    /// I/O error on the host
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// transport failure
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// monitor failure
    #[error("{0}")]
    Qmp(#[from] QmpError),
    /// unusable snapshot
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotError),
}

/// How the agent's connection travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// virtio-vsock (the guest dials CID 2).
    Vsock,
    /// A virtio-serial port named [`proto::SERIAL_PORT_NAME`].
    Serial,
}

impl Transport {
    /// `vsock` or `serial`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Vsock => "vsock",
            Transport::Serial => "serial",
        }
    }

    /// The default on this host: vsock where the kernel provides it (it
    /// migrates), else the serial port (the vhost-user daemon cannot be
    /// migrated, so vsock VMs could not be snapshotted).
    pub fn host_default() -> Result<Transport, VmError> {
        Ok(host::default_transport(vsock::detect()?).0)
    }
}

/// What to boot.
pub struct BootSpec {
    /// The VM's name.
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// A second initrd segment (newc cpio) appended after `initrd`.
    pub extra_initrd: Option<Vec<u8>>,
    /// Appended to provium's own kernel parameters.
    pub cmdline_append: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub transport: Transport,
    pub timeout: Duration,
}

/// Parts of a fresh boot that only some callers want.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootExtras {
    /// An interactive console port: a `virtconsole` (`/dev/hvc0` in the
    /// guest, its driver loaded by the agent) whose host end is a Unix
    /// socket QEMU listens on ([`Machine::console_port`]). `provium shell`
    /// runs a shell on it.
    pub console_port: bool,
}

/// What to restore.
pub struct RestoreSpec {
    /// The VM's name.
    pub name: String,
    /// The snapshot directory.
    pub snapshot: PathBuf,
    pub timeout: Duration,
}

/// How long saving or loading a snapshot's device state may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted op server has to dial in again (PID 1 restarts it
/// at once; it dials every 20 ms).
const REDIAL_WAIT: Duration = Duration::from_secs(5);
/// A monitor connection several parts use (connected lazily).
pub type SharedMonitor = Arc<Mutex<Option<Monitor>>>;

/// How long QEMU may take to open its monitor socket.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(5);

/// A running VM.
pub struct Machine {
    name: String,
    client: Arc<Client>,
    qemu: Arc<ChildGuard>,
    daemon: Option<VhostUserDaemon>,
    console: Arc<Console>,
    accel: Accel,
    transport: Transport,
    memory: GuestMemory,
    memory_mib: u64,
    cpus: u32,
    /// Connected on first use (boots do not need it); shared with the
    /// failure attribution, which asks QEMU's run state.
    monitor: SharedMonitor,
    paused: AtomicBool,
    /// Guest CID (kernel vsock; fixed with vhost-user; 0 for serial).
    cid: u32,
    /// The secret host-initiated connections show the agent.
    token: proto::SessionToken,
    /// The host end of the interactive console port, if it has one.
    console_port: Option<PathBuf>,
    dir: RunDir,
}

impl Drop for Machine {
    /// A machine dropped without [`Machine::kill`] (its Lua object collected,
    /// an interrupted boot's result nobody took) must not leave QEMU behind:
    /// tasks watching QEMU hold its guard too, so its own drop is not enough.
    fn drop(&mut self) {
        self.client.close("the VM was dropped");
        self.qemu.signal(libc::SIGKILL);
        if let Some(d) = &self.daemon {
            d.child.signal(libc::SIGKILL);
        }
    }
}

/// The machine-independent part of a launch.
struct Plan<'a> {
    name: &'a str,
    accel: Accel,
    memory_mib: u64,
    cpus: u32,
    transport: Transport,
    timeout: Duration,
    extras: BootExtras,
}

/// A fresh boot's image, or a snapshot's device state to load.
enum Start<'a> {
    Boot {
        kernel: &'a Path,
        initrd: &'a Path,
        cmdline_append: &'a str,
    },
    Restore {
        state: PathBuf,
    },
}

impl Machine {
    /// Boots a VM; returns once the agent answered the versioned handshake.
    pub async fn boot(spec: BootSpec) -> Result<Machine, (VmError, Option<Arc<Console>>)> {
        Self::boot_with(spec, BootExtras::default()).await
    }

    /// [`Machine::boot`] with optional parts.
    pub async fn boot_with(
        spec: BootSpec,
        extras: BootExtras,
    ) -> Result<Machine, (VmError, Option<Arc<Console>>)> {
        let dir = RunDir::create().map_err(|e| (VmError::Io(e), None))?;
        let console = Console::new(&dir.path().join("console.log"));
        match Self::boot_in(spec, extras, dir, console.clone()).await {
            Ok(m) => Ok(m),
            Err(e) => Err((e, Some(console))),
        }
    }

    async fn boot_in(
        spec: BootSpec,
        extras: BootExtras,
        dir: RunDir,
        console: Arc<Console>,
    ) -> Result<Machine, VmError> {
        let initrd = match &spec.extra_initrd {
            None => spec.initrd.clone(),
            Some(extra) => {
                // The kernel unpacks concatenated cpio archives in order.
                let path = dir.path().join("initrd.cpio");
                let mut bytes = std::fs::read(&spec.initrd)?;
                bytes.extend_from_slice(extra);
                std::fs::write(&path, bytes)?;
                path
            }
        };
        let memory = GuestMemory::create(spec.memory_mib)?;
        let plan = Plan {
            name: &spec.name,
            accel: accel::detect()?,
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            transport: spec.transport,
            timeout: spec.timeout,
            extras,
        };
        let start = Start::Boot {
            kernel: &spec.kernel,
            initrd: &initrd,
            cmdline_append: &spec.cmdline_append,
        };
        Self::start(plan, start, memory, dir, console).await
    }

    /// Starts a VM from a snapshot directory (see [`snapshot`]); returns once
    /// the agent answered. The snapshot is only read.
    pub async fn restore(spec: RestoreSpec) -> Result<Machine, (VmError, Option<Arc<Console>>)> {
        let dir = RunDir::create().map_err(|e| (VmError::Io(e), None))?;
        let console = Console::new(&dir.path().join("console.log"));
        match Self::restore_in(spec, dir, console.clone()).await {
            Ok(m) => Ok(m),
            Err(e) => Err((e, Some(console))),
        }
    }

    async fn restore_in(
        spec: RestoreSpec,
        dir: RunDir,
        console: Arc<Console>,
    ) -> Result<Machine, VmError> {
        let trace = Trace::new(&spec.name);
        let meta = SnapshotMeta::load(&spec.snapshot)?;
        let accel = accel::detect()?;
        if accel != meta.accel {
            return Err(VmError::Config(format!(
                "the snapshot was taken under {} and this host runs guests under {}",
                meta.accel.as_str(),
                accel.as_str()
            )));
        }
        if let Ok(mut earlier) = std::fs::read(snapshot::console_path(&spec.snapshot)) {
            earlier.extend_from_slice(
                format!(
                    "\n[provium: restored from a snapshot of vm \"{}\"]\n",
                    meta.vm
                )
                .as_bytes(),
            );
            console.seed(&earlier);
        }
        let memory = GuestMemory::create(meta.memory_mib)?;
        let ram = snapshot::ram_path(&spec.snapshot);
        let memory = tokio::task::spawn_blocking(move || memory.load(&ram).map(|()| memory))
            .await
            .map_err(|e| VmError::Infra(format!("loading the snapshot's RAM: {e}")))?
            .map_err(|e| {
                VmError::Io(std::io::Error::new(
                    e.kind(),
                    format!("loading the snapshot's RAM: {e}"),
                ))
            })?;
        trace.mark("RAM loaded");
        let plan = Plan {
            name: &spec.name,
            accel,
            memory_mib: meta.memory_mib,
            cpus: meta.cpus,
            transport: meta.transport,
            timeout: spec.timeout,
            extras: BootExtras::default(),
        };
        let start = Start::Restore {
            state: snapshot::state_path(&spec.snapshot),
        };
        Self::start(plan, start, memory, dir, console).await
    }

    async fn start(
        plan: Plan<'_>,
        start: Start<'_>,
        memory: GuestMemory,
        dir: RunDir,
        console: Arc<Console>,
    ) -> Result<Machine, VmError> {
        let trace = Trace::new(plan.name);
        let accel = plan.accel;
        let vsock_kind = vsock::detect()?;
        let host = HostNote {
            kind: host::kind(accel, vsock_kind),
            transport: plan.transport,
        };
        let daemon = match (plan.transport, vsock_kind) {
            (Transport::Vsock, VsockKind::VhostUser) => {
                Some(VhostUserDaemon::start(dir.path()).await?)
            }
            _ => None,
        };
        trace.mark("transport ready");
        let token = transport::fresh_token()
            .map_err(|e| VmError::Infra(format!("cannot draw the VM's session token: {e}")))?;
        let qmp_path = dir.path().join("qmp.sock");
        let console_port = plan
            .extras
            .console_port
            .then(|| dir.path().join("console-port.sock"));
        let mut attempt = 0;
        let (qemu, client, cid, monitor, listener) = loop {
            attempt += 1;
            let (listener, channel, port, cid) = match (plan.transport, &daemon) {
                (Transport::Serial, _) => {
                    let sock = dir.path().join("agent.sock");
                    let _ = std::fs::remove_file(&sock);
                    (AgentListener::unix(&sock)?, Channel::Serial(sock), 0, 0)
                }
                (Transport::Vsock, Some(d)) => (
                    AgentListener::unix(&d.dial_in_path(proto::HOST_PORT))?,
                    Channel::VhostUser(d.control.clone()),
                    proto::HOST_PORT,
                    vsock::VHOST_USER_GUEST_CID,
                ),
                (Transport::Vsock, None) => {
                    // The guest dials the port numbered like its CID (the
                    // agent's `provium.port=cid`), also after a restore, when
                    // it has a new CID: copies of one snapshot restored at
                    // once never want the same port.
                    let cid = vsock::pick_cid();
                    match AgentListener::vsock_on(cid, cid) {
                        Ok((listener, port)) => (listener, Channel::Kernel(cid), port, cid),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AddrInUse
                                && attempt < CID_ATTEMPTS =>
                        {
                            continue
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                            return Err(VmError::Infra(format!(
                                "no free guest CID after {attempt} attempts: host vsock \
                                 port {cid} is in use"
                            )))
                        }
                        Err(e) => {
                            return Err(VmError::Infra(format!(
                                "cannot listen on host vsock port {cid}: {e}"
                            )))
                        }
                    }
                }
            };
            let (boot, state) = match &start {
                Start::Boot {
                    kernel,
                    initrd,
                    cmdline_append,
                } => {
                    let mut cmdline = qemu::base_cmdline(accel);
                    match (plan.transport, &daemon) {
                        (Transport::Vsock, Some(_)) => {
                            cmdline.push_str(&format!(" provium.port={port}"))
                        }
                        (Transport::Vsock, None) => cmdline.push_str(" provium.port=cid"),
                        (Transport::Serial, _) => cmdline.push_str(" provium.transport=serial"),
                    }
                    if console_port.is_some() {
                        cmdline.push_str(" provium.console");
                    }
                    if !cmdline_append.trim().is_empty() {
                        cmdline.push(' ');
                        cmdline.push_str(cmdline_append.trim());
                    }
                    let image = qemu::BootImage {
                        kernel,
                        initrd,
                        cmdline,
                    };
                    (Some(image), None)
                }
                Start::Restore { state } => (None, Some(state.as_path())),
            };
            let cfg = qemu::QemuConfig {
                name: plan.name,
                accel,
                memory_mib: plan.memory_mib,
                cpus: plan.cpus,
                memory_fd: memory.raw_fd(),
                channel,
                qmp: &qmp_path,
                boot,
                console_port: console_port.as_deref(),
            };
            let ctx = LaunchCtx {
                dir: &dir,
                console: &console,
                trace: &trace,
                host: &host,
                token,
            };
            let launched = launch(&cfg, &listener, ctx, plan.timeout, state).await;
            match launched {
                Ok((qemu, client, monitor)) => break (qemu, client, cid, monitor, listener),
                // Kernel vhost-vsock CIDs are host-wide: another VM (of any
                // process) may hold the one we drew. Draw again.
                Err(Launch::CidInUse)
                    if plan.transport == Transport::Vsock
                        && daemon.is_none()
                        && attempt < CID_ATTEMPTS => {}
                Err(Launch::CidInUse) => {
                    return Err(VmError::Infra(format!(
                        "no free guest CID after {attempt} attempts ({host}){}",
                        stderr_note(&dir)
                    )))
                }
                Err(Launch::Failed(e)) => return Err(e),
            }
        };

        trace.mark("agent answered the hello");
        let monitor: SharedMonitor = Arc::new(Mutex::new(monitor));
        let witnesses = cause::Witnesses {
            monitor: Some((monitor.clone(), qmp_path.clone())),
            qemu: qemu.clone(),
            daemon: daemon.as_ref().map(|d| d.child.exit_watch()),
            console: console.clone(),
            stderr: dir.path().join("qemu.stderr"),
        };
        // The connection's end is told from what the host sees.
        let w = witnesses.clone();
        client.set_explainer(Box::new(move |raw: &str| w.explain(raw)));
        let w = witnesses.clone();
        client.set_stall_explainer(Box::new(move |silence| w.stalled(silence)));
        // Over vsock a restarted op server dials in again: the listener stays
        // open for it (the serial port carries the new hello on its stream).
        if plan.transport == Transport::Vsock {
            let listener = Arc::new(listener);
            let q = Arc::downgrade(&qemu);
            let daemon_exit = daemon.as_ref().map(|d| d.child.exit_watch());
            client.set_redial(Box::new(move || {
                let listener = listener.clone();
                let qemu = q.upgrade()?;
                let mut daemon_exit = daemon_exit.clone();
                crate::runtime::block_on(async move {
                    let accept = async {
                        let mut s = listener.accept().await?;
                        transport::handshake(&mut s, token).await?;
                        Ok::<_, VmError>(s.into_blocking_fd()?)
                    };
                    // Not past the end of QEMU or of the vsock daemon: then
                    // nobody will dial in, and the reason is told at once.
                    let daemon_gone = async {
                        match daemon_exit.as_mut() {
                            Some(rx) => {
                                let _ = rx.wait_for(|s| s.is_some()).await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        r = tokio::time::timeout(REDIAL_WAIT, accept) => r.ok()?.ok(),
                        _ = qemu.wait() => None,
                        _ = daemon_gone => None,
                    }
                })
            }));
        }
        // A halted guest (`halt -f`) leaves QEMU up with idle vCPUs: end it,
        // as a power-off would.
        let q = Arc::downgrade(&qemu);
        console.on_halt(Box::new(move || {
            if let Some(q) = q.upgrade() {
                q.signal(libc::SIGTERM);
            }
        }));
        // Monitor: QEMU ending closes the connection with the reason.
        let weak = Arc::downgrade(&client);
        let q = qemu.clone();
        tokio::spawn(async move {
            let status = q.wait().await;
            if let Some(client) = weak.upgrade() {
                let raw = format!("QEMU {}", process::describe_exit(&status));
                let reason = tokio::task::spawn_blocking(move || witnesses.explain(&raw))
                    .await
                    .unwrap_or_else(|e| format!("QEMU ended ({e})"));
                client.close(&reason);
            }
        });
        Ok(Machine {
            name: plan.name.to_string(),
            client,
            qemu,
            daemon,
            console,
            accel,
            transport: plan.transport,
            memory,
            memory_mib: plan.memory_mib,
            cpus: plan.cpus,
            monitor,
            paused: AtomicBool::new(false),
            cid,
            token,
            console_port,
            dir,
        })
    }

    /// The host end (a Unix socket QEMU listens on) of the interactive
    /// console port, if the machine was booted with one
    /// ([`BootExtras::console_port`]).
    pub fn console_port(&self) -> Option<&Path> {
        self.console_port.as_deref()
    }

    /// The agent connection.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The serial console.
    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }

    /// The accelerator in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the vCPUs are stopped ([`Machine::pause`]).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Whether the guest ended itself cleanly (power-off, halt, reboot) and
    /// QEMU is gone: the VM is shut down rather than dead.
    pub fn guest_shut_down(&self) -> bool {
        self.qemu.exited().is_some_and(|s| s.success())
            && cause::guest_ended(&self.console.tail(cause::CONSOLE_LINES))
    }

    /// Why the machine is no longer usable, if it is not.
    pub fn dead_reason(&self) -> Option<String> {
        if let Some(reason) = self.client.closed_reason() {
            return Some(reason.to_string());
        }
        self.qemu
            .exited()
            .map(|status| format!("QEMU {}", process::describe_exit(&status)))
    }

    /// Runs `f` on the monitor, connecting first if needed. Blocks.
    fn with_monitor<T>(
        &self,
        f: impl FnOnce(&mut Monitor) -> Result<T, QmpError>,
    ) -> Result<T, VmError> {
        if cause::qemu_is_stopped(self.qemu.pid()) {
            return Err(VmError::Infra(format!(
                "QEMU (pid {}) is stopped (SIGSTOP, or a debugger holds it): its monitor cannot answer",
                self.qemu.pid()
            )));
        }
        let mut guard = self.monitor.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let path = self.dir.path().join("qmp.sock");
            *guard = Some(Monitor::connect(&path, Instant::now() + MONITOR_TIMEOUT)?);
        }
        match guard.as_mut() {
            Some(m) => Ok(f(m)?),
            None => Err(VmError::Infra("QEMU's monitor is not connected".into())),
        }
    }

    /// Stops the vCPUs; guest calls fail with `message` until
    /// [`Machine::resume`]. Blocks.
    pub fn pause(&self, message: &str) -> Result<(), VmError> {
        self.with_monitor(|m| m.stop())?;
        self.paused.store(true, Ordering::Relaxed);
        self.client.set_paused(Some(message));
        Ok(())
    }

    /// Lets the vCPUs run again. Blocks.
    pub fn resume(&self) -> Result<(), VmError> {
        self.with_monitor(|m| m.cont())?;
        self.paused.store(false, Ordering::Relaxed);
        self.client.set_paused(None);
        Ok(())
    }

    /// Writes a snapshot of the running (or paused) VM to the new directory
    /// `dest` (its parent must exist); the VM goes on as it was. Blocks.
    pub fn snapshot(&self, dest: &Path) -> Result<SnapshotMeta, VmError> {
        if self.daemon.is_some() {
            return Err(VmError::Config(
                "this VM's vsock device is served by vhost-device-vsock, which QEMU cannot \
                 migrate; create the VM with transport = \"serial\" (the default on this host) \
                 to snapshot it"
                    .into(),
            ));
        }
        if dest.exists() {
            return Err(VmError::Config(format!(
                "{} already exists",
                dest.display()
            )));
        }
        let parent = dest.parent().unwrap_or(Path::new("."));
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "snapshot".into());
        let tmp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let was_running = !self.is_paused();
        if was_running {
            self.with_monitor(|m| m.stop())?;
        }
        let result = self.write_snapshot(&tmp).and_then(|meta| {
            std::fs::rename(&tmp, dest)?;
            Ok(meta)
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        if was_running {
            let resumed = self.with_monitor(|m| m.cont());
            if let (Ok(_), Err(e)) = (&result, resumed) {
                return Err(e);
            }
        }
        result
    }

    fn write_snapshot(&self, tmp: &Path) -> Result<SnapshotMeta, VmError> {
        std::fs::create_dir(tmp)?;
        let state = snapshot::state_path(tmp);
        let sock = self.dir.path().join("migrate.sock");
        self.with_monitor(|m| m.save_state(&state, &sock, STATE_TIMEOUT))?;
        self.memory.save(&snapshot::ram_path(tmp))?;
        let console = self.console.contents();
        let from = console.len().saturating_sub(snapshot::CONSOLE_BYTES);
        std::fs::write(snapshot::console_path(tmp), &console[from..])?;
        let meta = SnapshotMeta {
            format: snapshot::FORMAT,
            protocol: proto::PROTOCOL_VERSION,
            transport: self.transport,
            accel: self.accel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            vm: self.name.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let meta_file = snapshot::meta_path(tmp);
        std::fs::write(&meta_file, meta.render())?;
        std::fs::File::open(&meta_file)?.sync_all()?;
        std::fs::File::open(tmp)?.sync_all()?;
        Ok(meta)
    }

    /// Powers the guest off cleanly, then makes sure QEMU and the daemon are
    /// gone (SIGKILL after a grace period).
    pub async fn shutdown(self) {
        if self.is_paused() {
            // A stopped guest cannot power itself off.
            self.kill().await;
            return;
        }
        if self.qemu.exited().is_none() && self.client.closed_reason().is_none() {
            let client = self.client.clone();
            let ask = tokio::task::spawn_blocking(move || client.roundtrip(Op::Poweroff));
            let _ = tokio::time::timeout(Duration::from_secs(2), ask).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), self.qemu.wait()).await;
        }
        self.kill().await;
    }

    /// Kills QEMU and the daemon at once and waits until they are gone.
    pub async fn kill(self) {
        self.kill_because("the VM was shut down".to_string()).await
    }

    /// [`Machine::kill`], telling calls still in flight (and objects that
    /// outlive the machine) `reason`.
    pub async fn kill_because(self, reason: String) {
        self.client.close(&reason);
        self.qemu.signal(libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.qemu.wait()).await;
        if let Some(d) = &self.daemon {
            d.child.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), d.child.wait()).await;
        }
        // The run directory goes with `self`.
    }

    /// Where a raw host-initiated stream to the agent can be opened (vsock
    /// only: the serial port carries one connection).
    pub fn raw_endpoint(&self) -> Option<RawEndpoint> {
        (self.transport == Transport::Vsock).then(|| RawEndpoint {
            uds: self.daemon.as_ref().map(|d| d.uds.clone()),
            cid: self.cid,
            token: self.token,
        })
    }

    /// Where the VM's sockets and logs live while it runs.
    pub fn run_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Attempts at a free guest CID (kernel vhost-vsock).
const CID_ATTEMPTS: u32 = 8;

/// Why one QEMU launch failed.
enum Launch {
    /// QEMU could not take the guest CID (kernel vhost-vsock).
    CidInUse,
    Failed(VmError),
}

impl<E: Into<VmError>> From<E> for Launch {
    fn from(e: E) -> Self {
        Launch::Failed(e.into())
    }
}

/// Starts QEMU and waits for its agent's hello (or QEMU's end, or the
/// timeout). With `state`, QEMU loads that device state first (a restore)
/// and the returned monitor is connected.
async fn launch(
    cfg: &qemu::QemuConfig<'_>,
    listener: &AgentListener,
    ctx: LaunchCtx<'_>,
    timeout: Duration,
    state: Option<&Path>,
) -> Result<(Arc<ChildGuard>, Arc<Client>, Option<Monitor>), Launch> {
    let LaunchCtx {
        dir,
        console,
        trace,
        host,
        token,
    } = ctx;
    let mut cmd = Command::new(qemu::binary());
    let args = qemu::args(cfg);
    tracing::debug!(
        "vm {:?}: starting {} {}",
        cfg.name,
        qemu::binary().to_string_lossy(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("qemu.stderr"))?);
    let (guard, stdout) = ChildGuard::spawn_keeping(cmd, "QEMU", Some(cfg.memory_fd))
        .map_err(|e| VmError::Spawn("qemu-system-x86_64", e))?;
    if let Some(stdout) = stdout {
        let fd = stdout.into_owned_fd()?;
        let c = console.clone();
        std::thread::Builder::new()
            .name("provium-console".into())
            .spawn(move || c.capture(std::fs::File::from(fd)))?;
    }
    let qemu = Arc::new(guard);
    trace.mark("QEMU spawned");
    if trace.on() {
        let mut w = console.watch();
        let t = trace.clone();
        tokio::spawn(async move {
            if w.changed().await.is_ok() {
                t.mark("first console output");
            }
        });
    }
    let serial = matches!(cfg.channel, Channel::Serial(_));
    let restoring = state.is_some();
    // A restore loads the device state through the monitor and lets the
    // vCPUs run; the agent's side of the connection carries on from the
    // snapshot meanwhile.
    let load = async {
        let Some(state) = state else {
            return Ok::<_, VmError>(None);
        };
        let qmp = cfg.qmp.to_path_buf();
        let state = state.to_path_buf();
        let t = trace.clone();
        let monitor = tokio::task::spawn_blocking(move || {
            let mut m = Monitor::connect(&qmp, Instant::now() + MONITOR_TIMEOUT)?;
            m.load_state(&state, STATE_TIMEOUT)?;
            t.mark("device state loaded");
            m.cont()?;
            Ok::<_, VmError>(m)
        })
        .await
        .map_err(|e| VmError::Infra(format!("the restore task failed: {e}")))??;
        Ok(Some(monitor))
    };
    let connect = async {
        let mut stream = listener.accept().await?;
        // A restored serial port is mid-session; a restored vsock guest
        // dials again after its transport reset, with a fresh hello.
        let hello = if restoring && serial {
            transport::resync(&mut stream, token).await?
        } else {
            transport::handshake(&mut stream, token).await?
        };
        Ok::<_, VmError>(Client::start(stream.into_blocking_fd()?, hello, token)?)
    };
    // The hello goes out once the vCPUs run (measured with PROVIUM_LOG=debug,
    // QEMU spawn to the agent's answer: 126-137 ms, against ~150 ms when it
    // was written while the guest was still stopped).
    let both = async {
        let monitor = load.await?;
        let client = connect.await?;
        Ok::<_, VmError>((monitor, client))
    };
    let exited = |status: std::process::ExitStatus| async move {
        // Let the console task drain what QEMU printed last.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = std::fs::read_to_string(dir.path().join("qemu.stderr")).unwrap_or_default();
        if err.contains("unable to set guest cid") {
            return Launch::CidInUse;
        }
        let tail = console.tail(crate::vm::console::TAIL_LINES);
        if let Some(what) = cause::kernel_panic(&tail) {
            return Launch::Failed(VmError::Infra(format!(
                "the guest kernel panicked before the agent answered: {what} ({host})"
            )));
        }
        Launch::Failed(VmError::Infra(format!(
            "QEMU {} before the agent answered ({host}){}",
            process::describe_exit(&status),
            stderr_note(dir)
        )))
    };
    tokio::select! {
        r = both => match r {
            Ok((monitor, client)) => Ok((qemu, client, monitor)),
            Err(e) => {
                // A serial port's stream ends when QEMU does: report QEMU's
                // end (a guest panic, say) rather than the stream's.
                match tokio::time::timeout(Duration::from_millis(500), qemu.wait()).await {
                    Ok(status) => Err(exited(status).await),
                    Err(_) => Err(Launch::Failed(e)),
                }
            }
        },
        status = qemu.wait() => Err(exited(status).await),
        _ = tokio::time::sleep(timeout) => {
            Err(Launch::Failed(VmError::Infra(format!(
                "the agent did not answer within {:.1} s of starting QEMU ({host}{})",
                timeout.as_secs_f64(),
                if restoring { ", restoring a snapshot" } else { "" }
            ))))
        }
    }
}

/// Where a launch writes and reports.
#[derive(Clone, Copy)]
struct LaunchCtx<'a> {
    dir: &'a RunDir,
    console: &'a Arc<Console>,
    trace: &'a Trace,
    host: &'a HostNote,
    /// Handed to the agent in our hello.
    token: proto::SessionToken,
}

/// The host kind and transport, for failure messages.
struct HostNote {
    kind: String,
    transport: Transport,
}

impl std::fmt::Display for HostNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host kind {}, {} transport",
            self.kind,
            self.transport.as_str()
        )
    }
}

fn stderr_note(dir: &RunDir) -> String {
    let err = std::fs::read_to_string(dir.path().join("qemu.stderr")).unwrap_or_default();
    let err = err.trim();
    if err.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = err.lines().collect();
        let start = lines.len().saturating_sub(5);
        format!("; QEMU said: {}", lines[start..].join(" / "))
    }
}

/// The agent's service port as seen from the host.
#[derive(Clone)]
pub struct RawEndpoint {
    uds: Option<PathBuf>,
    cid: u32,
    token: proto::SessionToken,
}

impl RawEndpoint {
    /// Opens a fresh host-initiated stream to the agent's service port,
    /// bypassing the RPC connection (used by the transport benchmarks).
    pub async fn connect(&self) -> Result<transport::AgentStream, VmError> {
        use tokio::io::AsyncWriteExt;
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

/// Boot phase timings, as debug events (`PROVIUM_LOG=debug`).
#[derive(Clone)]
struct Trace {
    start: Option<std::time::Instant>,
    name: Arc<str>,
}

impl Trace {
    fn new(name: &str) -> Trace {
        let on = tracing::enabled!(tracing::Level::DEBUG);
        Trace {
            start: on.then(std::time::Instant::now),
            name: Arc::from(name),
        }
    }

    fn on(&self) -> bool {
        self.start.is_some()
    }

    fn mark(&self, what: &str) {
        if let Some(t) = self.start {
            tracing::debug!(
                "vm {:?}: {:7.1} ms  {what}",
                self.name,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
