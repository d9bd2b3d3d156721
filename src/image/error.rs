//! The one error of image building and the image cache.

use std::path::{Path, PathBuf};

/// Why the default guest image could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// cannot {action} {path}: {source}
    #[error("cannot {action} {path}: {source}", path = .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// cannot run {command}: {source}
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// {command} failed: {detail}
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    /// cannot resolve {package} with apt-cache: {detail}
    #[error("cannot resolve {package} with apt-cache: {detail}")]
    Resolve { package: String, detail: String },
    /// busybox-static is not installed (expected a static {path}); run scripts/setup
    #[error("busybox-static is not installed (expected a static {path}); run scripts/setup", path = .path.display())]
    BusyboxMissing { path: PathBuf },
    /// {path} is dynamically linked: busybox-static is not installed; run scripts/setup
    #[error("{path} is dynamically linked: busybox-static is not installed; run scripts/setup", path = .path.display())]
    BusyboxNotStatic { path: PathBuf },
    /// the agent binary is not a static ELF executable: {detail}
    #[error("the agent binary is not a static ELF executable: {detail}")]
    AgentNotStatic { detail: String },
    /// {path} is not a usable kernel package: {detail}
    #[error("{path} is not a usable kernel package: {detail}", path = .path.display())]
    Package { path: PathBuf, detail: String },
    /// cannot extract vmlinux from {path}: {detail}
    #[error("cannot extract vmlinux from {path}: {detail}")]
    Vmlinux { path: String, detail: String },
    /// the vmlinux extracted from {path} has no PVH entry point (Xen ELF note 18); the kernel needs CONFIG_PVH=y
    #[error("the vmlinux extracted from {path} has no PVH entry point (Xen ELF note 18); the kernel needs CONFIG_PVH=y")]
    NoPvhNote { path: String },
    /// kernel module {module} is not in {package}
    #[error("kernel module {module} is not in {package}")]
    ModuleMissing { module: String, package: String },
    /// kernel module dependency cycle in {package}: {cycle}
    #[error("kernel module dependency cycle in {package}: {cycle}")]
    ModuleCycle { package: String, cycle: String },
    /// cannot read the .modinfo section of {module}: {detail}
    #[error("cannot read the .modinfo section of {module}: {detail}")]
    Modinfo { module: String, detail: String },
    /// corrupt cache record {path}: {detail}; delete it to fetch the kernel again
    #[error("corrupt cache record {path}: {detail}; delete it to fetch the kernel again", path = .path.display())]
    Record { path: PathBuf, detail: String },
    /// a metadata file of the cache cannot be read or written (the message names it)
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
}

impl ImageError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The error for a kernel's metadata file: a malformed one is a
    /// [`ImageError::Record`], which says how to recover.
    pub(crate) fn kernel_record(e: crate::metadata::MetadataError) -> Self {
        match e {
            crate::metadata::MetadataError::Malformed { path, detail } => {
                ImageError::Record { path, detail }
            }
            other => ImageError::Metadata(other),
        }
    }
}
