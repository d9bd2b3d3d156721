//! The host kinds: what a VM host offers provium (an accelerator and a vsock
//! implementation), and how a nested L1 host of each kind is made.

use std::fmt;

/// A host kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// KVM and `/dev/vhost-vsock`: the common workstation or CI runner.
    KvmKernelVsock,
    /// KVM without kernel vsock (vsock through `vhost-device-vsock`).
    KvmVhostUser,
    /// No KVM, kernel vsock.
    TcgKernelVsock,
    /// TCG, vsock through `vhost-device-vsock`: our CI machines. Not made
    /// by an L1: commands of this kind run on this machine itself, whatever
    /// its kind.
    TcgVhostUser,
}

/// Every kind, in the order the smoke runs them.
pub const ALL: [Kind; 4] = [
    Kind::KvmKernelVsock,
    Kind::KvmVhostUser,
    Kind::TcgKernelVsock,
    Kind::TcgVhostUser,
];

impl Kind {
    /// The name used on the command line, by `provium.host().kind`, and by
    /// the L1 init (`hm.kind=`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::KvmKernelVsock => "kvm-kernel-vsock",
            Kind::KvmVhostUser => "kvm-vhost-user",
            Kind::TcgKernelVsock => "tcg-kernel-vsock",
            Kind::TcgVhostUser => "tcg-vhost-user",
        }
    }

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the kind is made by a nested L1 guest (all but the outer
    /// machine, which is tested where it runs).
    pub fn nested(self) -> bool {
        self != Kind::TcgVhostUser
    }

    /// The L1 CPU model: AMD SVM with nested paging where the kind has KVM
    /// (TCG emulates SVM, not Intel VMX).
    pub fn l1_cpu(self) -> &'static str {
        match self {
            Kind::KvmKernelVsock | Kind::KvmVhostUser => "qemu64,+svm,+npt",
            Kind::TcgKernelVsock | Kind::TcgVhostUser => "qemu64",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert_eq!(Kind::parse("kvm"), None);
    }

    #[test]
    fn only_the_outer_machine_is_not_nested() {
        let outer: Vec<Kind> = ALL.into_iter().filter(|k| !k.nested()).collect();
        assert_eq!(outer, vec![Kind::TcgVhostUser]);
    }
}
