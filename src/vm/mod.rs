//! The VM backend: QEMU plus its vsock device, started and owned by the rock.
//!
//! [`Machine::boot`] starts everything, waits for the agent to dial in and
//! returns a running machine with a live [`Client`]. A monitor task watches
//! QEMU: if it exits, the client is closed so that every blocked call wakes up
//! with what happened.

pub mod accel;
pub mod console;
pub mod process;
pub mod qemu;
pub mod rundir;
pub mod tsc;
pub mod vsock;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use provium_protocol::{self as proto, Op};
use tokio::process::Command;

use crate::transport::{self, AgentListener, Client, TransportError};
use accel::Accel;
use console::Console;
use process::ChildGuard;
use rundir::RunDir;
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
    pub timeout: Duration,
}

/// A running VM.
pub struct Machine {
    client: Arc<Client>,
    qemu: Arc<ChildGuard>,
    daemon: Option<VhostUserDaemon>,
    console: Arc<Console>,
    accel: Accel,
    /// Guest CID (kernel vsock; fixed with vhost-user).
    cid: u32,
    dir: RunDir,
}

impl Machine {
    /// Boots a VM; returns once the agent answered the versioned handshake.
    pub async fn boot(spec: BootSpec) -> Result<Machine, (VmError, Option<Arc<Console>>)> {
        let dir = RunDir::create().map_err(|e| (VmError::Io(e), None))?;
        let console = Console::new(&dir.path().join("console.log"));
        match Self::boot_in(spec, dir, console.clone()).await {
            Ok(m) => Ok(m),
            Err(e) => Err((e, Some(console))),
        }
    }

    async fn boot_in(
        spec: BootSpec,
        dir: RunDir,
        console: Arc<Console>,
    ) -> Result<Machine, VmError> {
        let trace = Trace::new(&spec.name);
        let accel = accel::detect()?;
        let daemon = match vsock::detect()? {
            VsockKind::VhostUser => Some(VhostUserDaemon::start(dir.path()).await?),
            VsockKind::Kernel => None,
        };
        trace.mark("vsock backend ready");
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

        let mut attempt = 0;
        let (qemu, client, cid) = loop {
            attempt += 1;
            let (listener, device, port, cid) = match &daemon {
                Some(d) => (
                    AgentListener::unix(&d.dial_in_path(proto::HOST_PORT))?,
                    qemu::VsockDevice::VhostUser(d.control.clone()),
                    proto::HOST_PORT,
                    vsock::VHOST_USER_GUEST_CID,
                ),
                None => {
                    let cid = rundir::pick_cid();
                    let (listener, port) = AgentListener::vsock(cid)?;
                    (listener, qemu::VsockDevice::Kernel(cid), port, cid)
                }
            };
            let mut cmdline = qemu::base_cmdline(accel);
            cmdline.push_str(&format!(" provium.port={port}"));
            if !spec.cmdline_append.trim().is_empty() {
                cmdline.push(' ');
                cmdline.push_str(spec.cmdline_append.trim());
            }
            let cfg = qemu::QemuConfig {
                name: &spec.name,
                accel,
                memory_mib: spec.memory_mib,
                cpus: spec.cpus,
                kernel: &spec.kernel,
                initrd: &initrd,
                cmdline,
                vsock: device,
            };
            match launch(&cfg, &listener, &dir, &console, &trace, spec.timeout).await {
                Ok((qemu, client)) => break (qemu, client, cid),
                // Kernel vhost-vsock CIDs are host-wide: another VM (of any
                // process) may hold the one we drew. Draw again.
                Err(Launch::CidInUse) if daemon.is_none() && attempt < CID_ATTEMPTS => {}
                Err(Launch::CidInUse) => {
                    return Err(VmError::Infra(format!(
                        "no free guest CID after {attempt} attempts{}",
                        stderr_note(&dir)
                    )))
                }
                Err(Launch::Failed(e)) => return Err(e),
            }
        };

        trace.mark("agent answered the hello");
        // Monitor: QEMU ending closes the connection with the reason.
        let weak = Arc::downgrade(&client);
        let q = qemu.clone();
        let d = dir.path().to_path_buf();
        tokio::spawn(async move {
            let status = q.wait().await;
            if let Some(client) = weak.upgrade() {
                let err = std::fs::read_to_string(d.join("qemu.stderr")).unwrap_or_default();
                let mut reason = format!("QEMU {}", process::describe_exit(&status));
                if !err.trim().is_empty() {
                    reason.push_str(&format!(": {}", last_line(&err)));
                }
                client.close(&reason);
            }
        });
        Ok(Machine {
            client,
            qemu,
            daemon,
            console,
            accel,
            cid,
            dir,
        })
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

    /// Why the machine is no longer usable, if it is not.
    pub fn dead_reason(&self) -> Option<String> {
        if let Some(status) = self.qemu.exited() {
            return Some(format!("QEMU {}", process::describe_exit(&status)));
        }
        self.client.closed_reason().map(|r| r.to_string())
    }

    /// Powers the guest off cleanly, then makes sure QEMU and the daemon are
    /// gone (SIGKILL after a grace period).
    pub async fn shutdown(self) {
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
        self.client.close("the VM was shut down");
        self.qemu.signal(libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.qemu.wait()).await;
        if let Some(d) = &self.daemon {
            d.child.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), d.child.wait()).await;
        }
        drop(self.dir);
    }

    /// Where a raw host-initiated stream to the agent can be opened.
    pub fn raw_endpoint(&self) -> RawEndpoint {
        RawEndpoint {
            uds: self.daemon.as_ref().map(|d| d.uds.clone()),
            cid: self.cid,
        }
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

/// Starts QEMU and waits for its agent's hello (or QEMU's end, or the timeout).
async fn launch(
    cfg: &qemu::QemuConfig<'_>,
    listener: &AgentListener,
    dir: &RunDir,
    console: &Arc<Console>,
    trace: &Trace,
    timeout: Duration,
) -> Result<(Arc<ChildGuard>, Arc<Client>), Launch> {
    let mut cmd = Command::new(qemu::binary());
    cmd.args(qemu::args(cfg))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("qemu.stderr"))?);
    let (guard, stdout) = ChildGuard::spawn_with_stdout(cmd, "QEMU")
        .map_err(|e| VmError::Spawn("qemu-system-x86_64", e))?;
    if let Some(stdout) = stdout {
        tokio::spawn(console.clone().capture(stdout));
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
    let connect = async {
        let mut stream = listener.accept().await?;
        let hello = transport::handshake(&mut stream).await?;
        Ok::<_, VmError>(Client::start(stream.into_blocking_fd()?, hello)?)
    };
    tokio::select! {
        r = connect => Ok((qemu, r?)),
        status = qemu.wait() => {
            // Let the console task drain what QEMU printed last.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let err = std::fs::read_to_string(dir.path().join("qemu.stderr")).unwrap_or_default();
            if err.contains("unable to set guest cid") {
                return Err(Launch::CidInUse);
            }
            Err(Launch::Failed(VmError::Infra(format!(
                "QEMU {} before the agent answered{}",
                process::describe_exit(&status),
                stderr_note(dir)
            ))))
        }
        _ = tokio::time::sleep(timeout) => {
            Err(Launch::Failed(VmError::Infra(format!(
                "the agent did not answer within {:.1} s of starting QEMU ({})",
                timeout.as_secs_f64(),
                cfg.accel.as_str()
            ))))
        }
    }
}

fn last_line(s: &str) -> &str {
    s.trim().lines().last().unwrap_or("")
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
}

impl RawEndpoint {
    /// Opens a fresh host-initiated stream to the agent's service port,
    /// bypassing the RPC connection (used by the transport benchmarks).
    pub async fn connect(&self) -> Result<transport::AgentStream, VmError> {
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

/// Boot phase timings on stderr when `PROVIUM_TRACE` is set.
#[derive(Clone)]
struct Trace {
    start: Option<std::time::Instant>,
    name: Arc<str>,
}

impl Trace {
    fn new(name: &str) -> Trace {
        let on = std::env::var_os("PROVIUM_TRACE").is_some_and(|v| !v.is_empty());
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
            eprintln!(
                "provium: vm {:?}: {:7.1} ms  {what}",
                self.name,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
