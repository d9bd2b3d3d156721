//! The vsock device behind a VM: kernel vhost-vsock where `/dev/vhost-vsock`
//! is usable, else a `vhost-device-vsock` daemon speaking vhost-user (one per
//! VM, started and stopped by the rock).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::error::VmError;
use super::process::ChildGuard;

/// Guest CID used with vhost-user: each VM has its own daemon, so CIDs need not
/// be unique across VMs.
pub const VHOST_USER_GUEST_CID: u32 = 3;

/// Guest CIDs for kernel vhost-vsock are drawn from
/// `CID_BASE..CID_BASE + CID_SPAN`: far from the reserved values 0-2 and
/// above the privileged vsock ports (< 1024), since the host listens on the
/// port numbered like the CID.
const CID_BASE: u32 = 4096;
const CID_SPAN: u32 = 1 << 30;

/// How long the daemon may take to create its socket.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Which vsock implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsockKind {
    /// Kernel vhost-vsock (`/dev/vhost-vsock`).
    Kernel,
    /// `vhost-device-vsock` over vhost-user.
    VhostUser,
}

/// Picks the vsock implementation; `PROVIUM_VSOCK=kernel|vhost-user` overrides.
pub fn detect() -> Result<VsockKind, VmError> {
    detect_why().map(|(k, _)| k)
}

/// Picks the vsock implementation and says why.
pub fn detect_why() -> Result<(VsockKind, String), VmError> {
    match std::env::var("PROVIUM_VSOCK").ok().as_deref() {
        Some("kernel") => return Ok((VsockKind::Kernel, "PROVIUM_VSOCK=kernel".into())),
        Some("vhost-user") => return Ok((VsockKind::VhostUser, "PROVIUM_VSOCK=vhost-user".into())),
        Some("") | None => {}
        Some(other) => {
            return Err(VmError::Config(format!(
                "PROVIUM_VSOCK={other:?} is not one of \"kernel\", \"vhost-user\""
            )))
        }
    }
    Ok(
        match OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-vsock")
        {
            Ok(_) => (VsockKind::Kernel, "/dev/vhost-vsock opens".into()),
            Err(e) => (
                VsockKind::VhostUser,
                format!("/dev/vhost-vsock cannot be opened ({e}): vhost-device-vsock serves vsock"),
            ),
        },
    )
}

impl VsockKind {
    /// `kernel` or `vhost-user`.
    pub fn as_str(self) -> &'static str {
        match self {
            VsockKind::Kernel => "kernel",
            VsockKind::VhostUser => "vhost-user",
        }
    }
}

/// A random guest CID for kernel vhost-vsock. CIDs are host-wide: parallel
/// VMs of this and other processes each draw their own, and a launch that
/// finds its CID (or the port named like it) taken draws again.
pub fn pick_cid() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `len` bytes into our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let r = if n == 4 {
        u32::from_ne_bytes(bytes)
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::process::id().wrapping_mul(2654435761) ^ nanos
    };
    CID_BASE + r % CID_SPAN
}

/// Finds the `vhost-device-vsock` binary: `$PROVIUM_VHOST_DEVICE_VSOCK`, then
/// `PATH`, then `~/.cargo/bin`.
pub fn daemon_binary() -> Result<PathBuf, VmError> {
    if let Some(p) = std::env::var_os("PROVIUM_VHOST_DEVICE_VSOCK") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin"));
    }
    candidates
        .into_iter()
        .map(|d| d.join("vhost-device-vsock"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            VmError::Config(
                "vhost-device-vsock not found (this host has no usable /dev/vhost-vsock); \
                 install it with `cargo install vhost-device-vsock` or run scripts/setup"
                    .into(),
            )
        })
}

/// A running vhost-user vsock daemon.
pub struct VhostUserDaemon {
    /// The `vhost-device-vsock` process (killed when dropped).
    pub child: ChildGuard,
    /// vhost-user control socket QEMU connects to.
    pub control: PathBuf,
    /// Base path of the host-side Unix sockets (`<uds>_<port>` for guest dial-ins).
    pub uds: PathBuf,
}

impl VhostUserDaemon {
    /// Starts the daemon in `dir` and waits for its control socket.
    pub async fn start(dir: &Path) -> Result<Self, VmError> {
        let control = dir.join("vhost.sock");
        let uds = dir.join("vsock.sock");
        let mut cmd = Command::new(daemon_binary()?);
        cmd.arg("--vm").arg(format!(
            "guest-cid={VHOST_USER_GUEST_CID},socket={},uds-path={}",
            control.display(),
            uds.display()
        ));
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("vhost.log"))?);
        let child = ChildGuard::spawn(cmd, "vhost-device-vsock")
            .map_err(|e| VmError::Spawn("vhost-device-vsock", e))?;
        let start = Instant::now();
        while !control.exists() {
            if let Some(status) = child.exited() {
                let log = std::fs::read_to_string(dir.join("vhost.log")).unwrap_or_default();
                return Err(VmError::Infra(format!(
                    "vhost-device-vsock {} before creating its socket: {}",
                    super::process::describe_exit(&status),
                    log.trim()
                )));
            }
            if start.elapsed() > DAEMON_START_TIMEOUT {
                return Err(VmError::Infra(format!(
                    "vhost-device-vsock did not create {} within {:?}",
                    control.display(),
                    DAEMON_START_TIMEOUT
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(VhostUserDaemon {
            child,
            control,
            uds,
        })
    }

    /// The Unix socket on which a guest connection to host port `port` arrives.
    pub fn dial_in_path(&self, port: u32) -> PathBuf {
        let mut p = self.uds.clone().into_os_string();
        p.push(format!("_{port}"));
        PathBuf::from(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_are_drawn_above_the_privileged_ports_and_spread() {
        let draws: std::collections::HashSet<u32> = (0..1000).map(|_| pick_cid()).collect();
        assert!(draws
            .iter()
            .all(|&c| (CID_BASE..CID_BASE + CID_SPAN).contains(&c)));
        // The port named like a CID must be a port an unprivileged host can
        // bind, and never VMADDR_PORT_ANY / VMADDR_CID_ANY (u32::MAX).
        assert!(CID_BASE >= 1024 && CID_BASE.checked_add(CID_SPAN).is_some());
        assert!(
            draws.len() > 990,
            "only {} distinct CIDs in 1000 draws",
            draws.len()
        );
    }
}
