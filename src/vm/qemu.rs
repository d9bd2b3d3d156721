//! The QEMU command line.
//!
//! The default machine is `microvm` booting an uncompressed `vmlinux` through
//! its PVH entry point: the fastest configuration measured under TCG (1.8 s to
//! the first answered op). Under TCG the CPU model is `qemu64` (`max` was
//! ~0.3 s slower to boot and 2-4x slower at bulk I/O); under KVM, `host`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::accel::Accel;

/// Everything QEMU needs to know.
pub struct QemuConfig<'a> {
    /// The VM's name (shown by `ps`).
    pub name: &'a str,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: String,
    pub vsock: VsockDevice,
}

/// The vsock device to attach.
pub enum VsockDevice {
    /// vhost-user device served by a daemon at this control socket.
    VhostUser(PathBuf),
    /// Kernel vhost-vsock with this guest CID.
    Kernel(u32),
}

/// The QEMU binary: `$PROVIUM_QEMU` or `qemu-system-x86_64` from `PATH`.
pub fn binary() -> OsString {
    std::env::var_os("PROVIUM_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// Kernel command line parameters provium always sets.
pub fn base_cmdline(accel: Accel) -> String {
    // cryptomgr.notests: the crypto self-tests cost ~340 ms of boot under TCG.
    let mut s = String::from("console=ttyS0 panic=-1 quiet cryptomgr.notests");
    if accel == Accel::Tcg {
        s.push_str(&format!(" tsc_early_khz={}", super::tsc::host_tsc_khz()));
    }
    s
}

/// Builds the argument list.
pub fn args(cfg: &QemuConfig<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-name");
    push(&format!("provium:{}", cfg.name.replace(',', ",,")));
    push("-M");
    push(&format!(
        "microvm,accel={},memory-backend=mem",
        cfg.accel.as_str()
    ));
    push("-cpu");
    push(match cfg.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "qemu64",
    });
    push("-m");
    push(&format!("{}M", cfg.memory_mib));
    push("-smp");
    push(&cfg.cpus.to_string());
    // vhost-user needs guest RAM that the daemon can map.
    push("-object");
    push(&format!(
        "memory-backend-memfd,id=mem,size={}M,share=on",
        cfg.memory_mib
    ));
    for flag in ["-nodefaults", "-no-user-config", "-no-reboot"] {
        push(flag);
    }
    push("-display");
    push("none");
    push("-serial");
    push("stdio");
    push("-append");
    push(&cfg.cmdline);
    match &cfg.vsock {
        VsockDevice::VhostUser(control) => {
            push("-chardev");
            push(&format!("socket,id=vsockc,path={}", control.display()));
            push("-device");
            push("vhost-user-vsock-device,chardev=vsockc");
        }
        VsockDevice::Kernel(cid) => {
            push("-device");
            push(&format!("vhost-vsock-device,guest-cid={cid}"));
        }
    }
    a.push("-kernel".into());
    a.push(cfg.kernel.as_os_str().to_owned());
    a.push("-initrd".into());
    a.push(cfg.initrd.as_os_str().to_owned());
    a
}
