//! The one error of the VM backend.

use super::accel::AccelError;
use super::qmp::QmpError;
use super::snapshot;
use crate::transport::TransportError;

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
    /// monitor failure
    #[error("{0}")]
    Qmp(#[from] QmpError),
    /// no usable accelerator setting
    #[error("{0}")]
    Accel(#[from] AccelError),
    /// unusable snapshot
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotError),
}
