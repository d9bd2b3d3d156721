//! Per-VM runtime directories (sockets, logs), removed when the VM goes.
//!
//! They live under `$XDG_RUNTIME_DIR/provium` or `/tmp/provium-<uid>` and are
//! named `<pid>-<n>`, so directories left behind by a killed process are
//! recognised (their pid is gone) and swept by the next process.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static NEXT: AtomicU32 = AtomicU32::new(1);
static SWEEP: Once = Once::new();

/// A directory removed on drop.
pub struct RunDir {
    path: PathBuf,
}

fn base() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Path::new(&d).join("provium");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("provium-{uid}"))
}

/// The base directory, created, and swept of dead processes' leftovers once
/// per process.
fn prepared_base() -> io::Result<PathBuf> {
    let base = base();
    std::fs::create_dir_all(&base)?;
    SWEEP.call_once(|| sweep(&base));
    Ok(base)
}

impl RunDir {
    /// Creates a fresh directory.
    pub fn create() -> io::Result<RunDir> {
        let base = prepared_base()?;
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A fresh path next to the run directories, named `<pid>-<tag><n>` so
    /// that the sweep removes it once this process is gone. Not created.
    pub fn scratch_path(tag: &str) -> io::Result<PathBuf> {
        let base = prepared_base()?;
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{pid}-{tag}{n}"));
            if !path.exists() {
                return Ok(path);
            }
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes directories of processes that no longer exist.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
