//! Starting a machine: a fresh boot from a kernel and initrd, or a restore
//! from a snapshot. Both end in [`start`], which sets up the transport, draws
//! a guest CID (kernel vhost-vsock), has [`super::launch`] start QEMU until
//! it takes, and wires the monitor tasks that explain the connection's end.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provium_protocol as proto;

use super::accel::{self, Accel};
use super::cause;
use super::console::Console;
use super::host;
use super::launch::{launch, stderr_note, HostNote, Launch, LaunchCtx, CID_ATTEMPTS};
use super::memory::GuestMemory;
use super::process;
use super::qemu::{self, Channel};
use super::ramfill::RamFill;
use super::rundir::RunDir;
use super::snapshot::{self, SnapshotMeta};
use super::spare;
use super::trace::Trace;
use super::vsock::{self, VhostUserDaemon, VsockKind};
use super::REDIAL_WAIT;
use super::{BootExtras, BootSpec, Machine, RestoreSpec, SharedMonitor, Transport, VmError};
use crate::transport::{self, AgentListener};

/// The machine-independent part of a launch.
struct Plan<'a> {
    name: &'a str,
    accel: Accel,
    memory_mib: u64,
    cpus: u32,
    transport: Transport,
    timeout: Duration,
    extras: BootExtras,
    /// The free-page-reporting balloon: every boot has it; a restore has it
    /// when the snapshot's machine had it.
    balloon: bool,
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
        ram: RamFill,
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
            balloon: true,
        };
        let start = Start::Boot {
            kernel: &spec.kernel,
            initrd: &initrd,
            cmdline_append: &spec.cmdline_append,
        };
        Self::start(plan, start, memory, dir, console).await
    }

    /// Starts a VM from a snapshot directory (see [`snapshot`]); returns once
    /// the agent answered. The snapshot is only read. With
    /// [`RestoreSpec::spare`], a spare restored ahead is taken when there is
    /// one, and the next is started.
    pub async fn restore(spec: RestoreSpec) -> Result<Machine, (VmError, Option<Arc<Console>>)> {
        if !spec.spare {
            return Self::restore_fresh(spec).await;
        }
        let restored = match spare::take(&spec).await {
            Some(m) => Ok(m),
            None => Self::restore_fresh(spec.clone()).await,
        };
        if restored.is_ok() {
            spare::prepare(&spec);
        }
        restored
    }

    /// Restores `spec.snapshot` into a new QEMU.
    pub(super) async fn restore_fresh(
        spec: RestoreSpec,
    ) -> Result<Machine, (VmError, Option<Arc<Console>>)> {
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
        let ram = RamFill::start(&memory, snapshot::ram_path(&spec.snapshot), trace)?;
        let plan = Plan {
            name: &spec.name,
            accel,
            memory_mib: meta.memory_mib,
            cpus: meta.cpus,
            transport: meta.transport,
            timeout: spec.timeout,
            extras: BootExtras::default(),
            balloon: meta.balloon,
        };
        let start = Start::Restore {
            state: snapshot::state_path(&spec.snapshot),
            ram,
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
        let raw_port = plan
            .extras
            .raw_port
            .then(|| dir.path().join("raw-port.sock"));
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
                    if raw_port.is_some() {
                        cmdline.push_str(" provium.raw_port");
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
                Start::Restore { state, ram } => (None, Some((state.as_path(), ram.clone()))),
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
                raw_port: raw_port.as_deref(),
                balloon: plan.balloon,
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
            memory: Some(memory),
            memory_mib: plan.memory_mib,
            cpus: plan.cpus,
            balloon: plan.balloon,
            monitor,
            paused: AtomicBool::new(false),
            cid,
            token,
            console_port,
            raw_port,
            dir,
        })
    }
}
