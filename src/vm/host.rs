//! What kind of host this is: the accelerator and vsock implementation the
//! rock picks, the default transport, and why (`provium.host()`, and the
//! host kind named in boot failures).

use super::accel::{self, Accel};
use super::vsock::{self, VsockKind};
use super::{Transport, VmError};

/// The host as the rock sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// The accelerator VMs use.
    pub accel: Accel,
    /// Why that accelerator (e.g. `/dev/kvm opens and kvm_intel is loaded`).
    pub accel_reason: String,
    /// The vsock implementation VMs use.
    pub vsock: VsockKind,
    /// Why that vsock implementation.
    pub vsock_reason: String,
    /// The transport of VMs that do not name one.
    pub transport: Transport,
    /// Why that transport is the default.
    pub transport_reason: &'static str,
}

impl HostReport {
    /// Detects everything (a few file opens; nothing is cached, so a
    /// module loaded meanwhile is seen).
    pub fn detect() -> Result<HostReport, VmError> {
        let (accel, accel_reason) = accel::detect_why()?;
        let (vsock, vsock_reason) = vsock::detect_why()?;
        let (transport, transport_reason) = default_transport(vsock);
        Ok(HostReport {
            accel,
            accel_reason,
            vsock,
            vsock_reason,
            transport,
            transport_reason,
        })
    }

    /// `kvm-kernel-vsock`, `tcg-vhost-user`, ...: the host kinds README
    /// lists and `scripts/host-matrix` tests.
    pub fn kind(&self) -> String {
        kind(self.accel, self.vsock)
    }
}

/// The default transport for a vsock implementation, and why.
pub fn default_transport(vsock: VsockKind) -> (Transport, &'static str) {
    match vsock {
        VsockKind::Kernel => (
            Transport::Vsock,
            "kernel vhost-vsock: vsock VMs can be snapshotted",
        ),
        VsockKind::VhostUser => (
            Transport::Serial,
            "QEMU cannot migrate a vhost-user vsock device, so VMs use a virtio-serial \
             port (it snapshots)",
        ),
    }
}

/// The name of a host kind.
pub fn kind(accel: Accel, vsock: VsockKind) -> String {
    format!(
        "{}-{}",
        accel.as_str(),
        match vsock {
            VsockKind::Kernel => "kernel-vsock",
            VsockKind::VhostUser => "vhost-user",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_the_host_matrix_names_them() {
        assert_eq!(kind(Accel::Kvm, VsockKind::Kernel), "kvm-kernel-vsock");
        assert_eq!(kind(Accel::Kvm, VsockKind::VhostUser), "kvm-vhost-user");
        assert_eq!(kind(Accel::Tcg, VsockKind::Kernel), "tcg-kernel-vsock");
        assert_eq!(kind(Accel::Tcg, VsockKind::VhostUser), "tcg-vhost-user");
    }

    #[test]
    fn serial_is_the_default_only_without_kernel_vsock() {
        assert_eq!(default_transport(VsockKind::Kernel).0, Transport::Vsock);
        assert_eq!(default_transport(VsockKind::VhostUser).0, Transport::Serial);
    }
}
