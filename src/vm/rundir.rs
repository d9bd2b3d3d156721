//! Per-VM runtime directories (sockets, logs), removed when the VM goes.
//!
//! They live under `$XDG_RUNTIME_DIR/provium` or `$TMPDIR/provium-<uid>` and
//! are named `<pid>-<n>`, so directories left behind by a killed process are
//! recognised (their pid is gone) and swept by the next process.
//!
//! The base must be ours alone: QEMU (often run as root) writes its logs and
//! sockets below it by path, so a base another user owns or can write to
//! would let that user redirect those writes with symlinks. The base is
//! created with mode 0700, checked with `lstat` (a real directory, owned by
//! our effective uid, no access for group or others: a wrong mode on our own
//! directory is fixed, anything else refused with a message naming the
//! path), and every per-VM directory is created fresh (`mkdir` fails if the
//! name exists) with mode 0700.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static NEXT: AtomicU32 = AtomicU32::new(1);
static SWEEP: Once = Once::new();

/// A directory removed on drop.
pub struct RunDir {
    path: PathBuf,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn base() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Path::new(&d).join("provium");
    }
    std::env::temp_dir().join(format!("provium-{}", euid()))
}

/// The base directory, created private, checked, and swept of dead
/// processes' leftovers once per process.
fn prepared_base() -> io::Result<PathBuf> {
    let base = base();
    match DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create the run directory {}: {e}", base.display()),
            ))
        }
    }
    ensure_private(&base, euid())?;
    SWEEP.call_once(|| sweep(&base));
    Ok(base)
}

/// Checks that `dir` is a directory (not a symlink) owned by `uid` that
/// nobody else can use; tightens the mode of such a directory if needed.
fn ensure_private(dir: &Path, uid: u32) -> io::Result<()> {
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing the run directory {}: {why} (another user could redirect QEMU's \
                 files through it); remove it, or set XDG_RUNTIME_DIR or TMPDIR to a \
                 directory of your own",
                dir.display()
            ),
        ))
    };
    let m = std::fs::symlink_metadata(dir)?;
    if m.file_type().is_symlink() {
        return refuse("it is a symbolic link".into());
    }
    if !m.is_dir() {
        return refuse("it is not a directory".into());
    }
    if m.uid() != uid {
        return refuse(format!("it belongs to uid {}, not to uid {uid}", m.uid()));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).or_else(|e| {
            refuse(format!(
                "its mode is {:o} and cannot be made 0700: {e}",
                m.mode() & 0o7777
            ))
        })?;
    }
    Ok(())
}

impl RunDir {
    /// Creates a fresh directory.
    pub fn create() -> io::Result<RunDir> {
        let base = prepared_base()?;
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{pid}-{n}"));
            match DirBuilder::new().mode(0o700).create(&path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("provium-rundir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn a_private_directory_of_ours_is_accepted_and_a_loose_mode_fixed() {
        let d = scratch("mode");
        DirBuilder::new().mode(0o755).create(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private(&d, euid()).expect("our own directory");
        let mode = std::fs::metadata(&d).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir(&d).expect("rmdir");
    }

    #[test]
    fn another_owner_a_symlink_or_a_file_is_refused() {
        let d = scratch("owner");
        DirBuilder::new().mode(0o700).create(&d).expect("mkdir");
        let err = ensure_private(&d, euid().wrapping_add(1)).expect_err("another uid");
        assert!(err.to_string().contains("belongs to uid"), "{err}");
        assert!(err.to_string().contains(&d.display().to_string()), "{err}");
        let link = scratch("link");
        std::os::unix::fs::symlink(&d, &link).expect("symlink");
        let err = ensure_private(&link, euid()).expect_err("a symlink");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&link).expect("rm link");
        std::fs::remove_dir(&d).expect("rmdir");
        let f = scratch("file");
        std::fs::write(&f, b"x").expect("write");
        let err = ensure_private(&f, euid()).expect_err("a file");
        assert!(err.to_string().contains("not a directory"), "{err}");
        std::fs::remove_file(&f).expect("rm");
    }
}
