//! One QEMU launch: spawn it, capture its console, load a snapshot's device
//! state if restoring, and wait for the agent's hello (or QEMU's end, or the
//! timeout), telling why it failed from what the host saw.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provium_protocol as proto;
use tokio::process::Command;

use super::cause;
use super::console::Console;
use super::process::{self, ChildGuard};
use super::qemu::{self, Channel};
use super::qmp::Monitor;
use super::ramfill::RamFill;
use super::rundir::RunDir;
use super::trace::Trace;
use super::{Transport, VmError, MONITOR_TIMEOUT, STATE_TIMEOUT};
use crate::transport::{self, AgentListener, Client};

/// Attempts at a free guest CID (kernel vhost-vsock).
pub(super) const CID_ATTEMPTS: u32 = 8;

/// Why one QEMU launch failed.
pub(super) enum Launch {
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
/// timeout). With `state`, QEMU loads that device state first (a restore,
/// once the RAM copy is done) and the returned monitor is connected.
pub(super) async fn launch(
    cfg: &qemu::QemuConfig<'_>,
    listener: &AgentListener,
    ctx: LaunchCtx<'_>,
    timeout: Duration,
    state: Option<(&Path, RamFill)>,
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
        let Some((state, ram)) = state else {
            return Ok::<_, VmError>(None);
        };
        ram.done().await?;
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
        let tail = console.tail(super::console::TAIL_LINES);
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
pub(super) struct LaunchCtx<'a> {
    pub(super) dir: &'a RunDir,
    pub(super) console: &'a Arc<Console>,
    pub(super) trace: &'a Trace,
    pub(super) host: &'a HostNote,
    /// Handed to the agent in our hello.
    pub(super) token: proto::SessionToken,
}

/// The host kind and transport, for failure messages.
pub(super) struct HostNote {
    pub(super) kind: String,
    pub(super) transport: Transport,
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

pub(super) fn stderr_note(dir: &RunDir) -> String {
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
