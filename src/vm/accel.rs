//! Choosing the accelerator.
//!
//! A `/dev/kvm` that opens proves little: on PVM hosts (module `kvm_pvm`) it
//! opens but cannot run a stock kernel (see the project's VM measurements). KVM
//! is used only where the CPU has hardware virtualisation (`vmx`/`svm`) or a
//! hardware KVM module is loaded; `PROVIUM_ACCEL=kvm|tcg` overrides.

use std::fs::OpenOptions;
use std::path::Path;

/// Errors of accelerator selection.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// `PROVIUM_ACCEL` names no accelerator.
    #[error("PROVIUM_ACCEL={0:?} is not one of \"kvm\", \"tcg\"")]
    BadOverride(String),
}

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation (TCG), much slower.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Picks the accelerator for this host.
pub fn detect() -> Result<Accel, AccelError> {
    detect_why().map(|(a, _)| a)
}

/// Picks the accelerator for this host and says why.
pub fn detect_why() -> Result<(Accel, String), AccelError> {
    match std::env::var("PROVIUM_ACCEL").ok().as_deref() {
        Some("kvm") => return Ok((Accel::Kvm, "PROVIUM_ACCEL=kvm".into())),
        Some("tcg") => return Ok((Accel::Tcg, "PROVIUM_ACCEL=tcg".into())),
        Some("") | None => {}
        Some(other) => return Err(AccelError::BadOverride(other.to_string())),
    }
    Ok(hardware_kvm())
}

fn hardware_kvm() -> (Accel, String) {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return (Accel::Tcg, format!("/dev/kvm cannot be opened ({e})"));
    }
    for module in ["kvm_amd", "kvm_intel"] {
        if Path::new("/sys/module").join(module).exists() {
            return (Accel::Kvm, format!("/dev/kvm opens and {module} is loaded"));
        }
    }
    if cpu_has_virt_flags() {
        return (
            Accel::Kvm,
            "/dev/kvm opens and the CPU has hardware virtualisation (vmx/svm)".into(),
        );
    }
    (
        Accel::Tcg,
        "/dev/kvm opens, but neither kvm_intel nor kvm_amd is loaded and the CPU has no \
         vmx/svm flag (a PVM-style KVM cannot run a stock kernel)"
            .into(),
    )
}

fn cpu_has_virt_flags() -> bool {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}
