//! The VM backend: QEMU plus the device that carries the agent's connection,
//! started and owned by the rock.
//!
//! [`Machine::boot`] starts everything, waits for the agent to dial in and
//! returns a running machine with a live [`Client`]; [`Machine::restore`]
//! does the same from a snapshot ([`snapshot`]). A monitor task watches
//! QEMU: if it exits, the client is closed so that every blocked call wakes
//! up with what happened. Starting is `start`'s job (one QEMU launch is
//! `launch`'s); [`raw`] opens benchmark-only streams beside the RPC
//! connection.
//!
//! Transports: vsock (kernel vhost-vsock, or a `vhost-device-vsock` daemon
//! per VM) or a virtio-serial port ([`Transport`]). QEMU cannot migrate a
//! vhost-user device, so where vsock would need the daemon the default is
//! the serial port: it snapshots, and under TCG it is also the faster of the
//! two (see BENCHMARKS.md).

/// The most virtual CPUs a VM (or a snapshot restored) may have.
pub const MAX_CPUS: u32 = 64;

/// The most guest memory a snapshot may describe, in MiB (1 TiB, as much as
/// a shared fixture's RAM file may hold).
pub const MAX_SNAPSHOT_MEMORY_MIB: u64 = 1 << 20;

pub mod accel;
pub mod cause;
pub mod console;
mod error;
pub mod host;
mod launch;
pub mod memory;
pub mod process;
pub mod qemu;
pub mod qmp;
mod ramfill;
pub mod raw;
pub mod rundir;
pub mod snapshot;
mod spare;
mod start;
mod trace;
pub mod tsc;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provium_protocol as proto;

use crate::transport::Client;
use accel::Accel;
use console::Console;
pub use error::VmError;
use memory::GuestMemory;
use process::ChildGuard;
use qmp::{Monitor, QmpError};
use rundir::RunDir;
use snapshot::SnapshotMeta;
use vsock::VhostUserDaemon;

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
    /// The kernel QEMU loads (`-kernel`).
    pub kernel: PathBuf,
    /// The initramfs (newc cpio) QEMU loads (`-initrd`).
    pub initrd: PathBuf,
    /// A second initrd segment (newc cpio) appended after `initrd`.
    pub extra_initrd: Option<Vec<u8>>,
    /// Appended to provium's own kernel parameters.
    pub cmdline_append: String,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// How the agent's connection reaches the host.
    pub transport: Transport,
    /// How long the agent may take to say hello after QEMU starts.
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
    /// The benchmarks' raw virtio-serial port
    /// ([`provium_protocol::RAW_PORT_NAME`]), its host end a Unix socket
    /// QEMU listens on: raw echo and bulk probes of the serial transport
    /// (`vm:_raw_*` in Lua). Not in a snapshot's description: a snapshot
    /// of such a machine does not restore.
    pub raw_port: bool,
}

/// What to restore.
#[derive(Debug, Clone)]
pub struct RestoreSpec {
    /// The VM's name.
    pub name: String,
    /// The snapshot directory.
    pub snapshot: PathBuf,
    /// How long the agent may take to say hello after QEMU starts.
    pub timeout: Duration,
    /// Keep a spare: take the one restored ahead from this snapshot if
    /// there is one, and start restoring the next (see `spare`). Fixtures
    /// set it; a VM restored from a snapshot now and then does not.
    pub spare: bool,
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
    /// Always `Some` until [`Machine::kill_because`] hands it to a
    /// background task to free.
    memory: Option<GuestMemory>,
    memory_mib: u64,
    cpus: u32,
    /// Whether it has the free-page-reporting balloon ([`qemu::BALLOON`]).
    balloon: bool,
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
    /// The host end of the benchmarks' raw port, if it has one.
    raw_port: Option<PathBuf>,
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

impl Machine {
    /// Gives a spare its user's name (messages; QEMU's `-name` keeps the
    /// spare's).
    fn rename(&mut self, name: &str) {
        self.name = name.to_string();
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
        let memory = self
            .memory
            .as_ref()
            .ok_or_else(|| VmError::Infra("the VM's memory is gone".into()))?;
        memory.save(&snapshot::ram_path(tmp))?;
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
            balloon: self.balloon,
        };
        meta.save(tmp)?;
        std::fs::File::open(tmp)?.sync_all()?;
        Ok(meta)
    }

    /// Ends the VM: QEMU and the daemon are killed at once, and gone when
    /// this returns. No guest poweroff first: provium guests have no disks,
    /// their whole state is RAM that dies with QEMU, so a clean poweroff
    /// (the agent syncs, the kernel halts, QEMU exits) only cost time: 62-65
    /// ms of a 200 ms fixture-per-spec loop under TCG (`bench/fresh.lua`).
    pub async fn shutdown(self) {
        self.kill().await;
    }

    /// Kills QEMU and the daemon at once and waits until they are gone.
    pub async fn kill(self) {
        self.kill_because("the VM was shut down".to_string()).await
    }

    /// [`Machine::kill`], telling calls still in flight (and objects that
    /// outlive the machine) `reason`.
    pub async fn kill_because(mut self, reason: String) {
        self.client.close(&reason);
        self.qemu.signal(libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.qemu.wait()).await;
        // Freeing the guest's RAM (tens of MiB of memfd pages) takes ~10 ms
        // of a close that is otherwise ~6 ms: nobody waits for it. A process
        // that exits first has the kernel free it.
        if let Some(memory) = self.memory.take() {
            tokio::task::spawn_blocking(move || drop(memory));
        }
        if let Some(d) = &self.daemon {
            d.child.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), d.child.wait()).await;
        }
        // The run directory goes with `self`.
    }
}
