//! Choosing the accelerator.
//!
//! A `/dev/kvm` that opens proves little: on PVM hosts (module `kvm_pvm`) it
//! opens but cannot run a stock kernel (see the project's VM measurements). KVM
//! is used only where the CPU has hardware virtualisation (`vmx`/`svm`) or a
//! hardware KVM module is loaded; `PROVIUM_ACCEL=kvm|tcg` overrides.

use std::fs::OpenOptions;
use std::path::Path;

use super::VmError;

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
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
pub fn detect() -> Result<Accel, VmError> {
    match std::env::var("PROVIUM_ACCEL").ok().as_deref() {
        Some("kvm") => return Ok(Accel::Kvm),
        Some("tcg") => return Ok(Accel::Tcg),
        Some("") | None => {}
        Some(other) => {
            return Err(VmError::Config(format!(
                "PROVIUM_ACCEL={other:?} is not one of \"kvm\", \"tcg\""
            )))
        }
    }
    Ok(if hardware_kvm() {
        Accel::Kvm
    } else {
        Accel::Tcg
    })
}

fn hardware_kvm() -> bool {
    let kvm_usable = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_usable {
        return false;
    }
    let hw_module =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    hw_module || cpu_has_virt_flags()
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
