//! The one error of image building and the image cache.

use std::path::{Path, PathBuf};

/// Why the default guest image could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// cannot {action} {path}: {source}
    #[error("cannot {action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done, as a verb phrase ("read", "create directory").
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// cannot run {command}: {source}
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line, as shown to the user.
        command: String,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },
    /// {command} failed: {detail}
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line, as shown to the user.
        command: String,
        /// Its exit status and standard error, or what went wrong reading its output.
        detail: String,
    },
    /// cannot resolve {package} with apt-cache: {detail}
    #[error("cannot resolve {package} with apt-cache: {detail}")]
    Resolve {
        /// The package asked for (`name` or `name=version`).
        package: String,
        /// What apt-cache said, and how to fix it.
        detail: String,
    },
    /// busybox-static is not installed (expected a static {path}); run scripts/setup
    #[error("busybox-static is not installed (expected a static {path}); run scripts/setup", path = .path.display())]
    BusyboxMissing {
        /// Where the static busybox binary was expected.
        path: PathBuf,
    },
    /// {path} is dynamically linked: busybox-static is not installed; run scripts/setup
    #[error("{path} is dynamically linked: busybox-static is not installed; run scripts/setup", path = .path.display())]
    BusyboxNotStatic {
        /// The busybox binary found, which has an ELF interpreter.
        path: PathBuf,
    },
    /// the agent binary is not a static ELF executable: {detail}
    #[error("the agent binary is not a static ELF executable: {detail}")]
    AgentNotStatic {
        /// Why the embedded agent was rejected.
        detail: String,
    },
    /// {path} is not a usable kernel package: {detail}
    #[error("{path} is not a usable kernel package: {detail}", path = .path.display())]
    Package {
        /// The kernel `.deb` file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// cannot extract vmlinux from {path}: {detail}
    #[error("cannot extract vmlinux from {path}: {detail}")]
    Vmlinux {
        /// The compressed kernel, as `package.deb:/boot/vmlinuz-*`.
        path: String,
        /// Why the extraction or the ELF parsing failed.
        detail: String,
    },
    /// the vmlinux extracted from {path} has no PVH entry point (Xen ELF note 18); the kernel needs CONFIG_PVH=y
    #[error("the vmlinux extracted from {path} has no PVH entry point (Xen ELF note 18); the kernel needs CONFIG_PVH=y")]
    NoPvhNote {
        /// The compressed kernel, as `package.deb:/boot/vmlinuz-*`.
        path: String,
    },
    /// kernel module {module} is not in {package}
    #[error("kernel module {module} is not in {package}")]
    ModuleMissing {
        /// The module (asked for, or needed by another) the package lacks.
        module: String,
        /// The kernel package, as `name=version`.
        package: String,
    },
    /// kernel module dependency cycle in {package}: {cycle}
    #[error("kernel module dependency cycle in {package}: {cycle}")]
    ModuleCycle {
        /// The kernel package, as `name=version`.
        package: String,
        /// The modules of the loop, joined by ` -> `.
        cycle: String,
    },
    /// cannot read the .modinfo section of {module}: {detail}
    #[error("cannot read the .modinfo section of {module}: {detail}")]
    Modinfo {
        /// The module whose `.modinfo` could not be read.
        module: String,
        /// Why.
        detail: String,
    },
    /// corrupt cache record {path}: {detail}; delete it to fetch the kernel again
    #[error("corrupt cache record {path}: {detail}; delete it to fetch the kernel again", path = .path.display())]
    Record {
        /// The cache record (a kernel's metadata file or `current.json`).
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
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
