//! Cache plumbing: the lock, temporary directories renamed into place and
//! timestamps. What the entries hold is [`super::kernel`]'s and
//! [`super::entry`]'s business; their metadata files are [`super::records`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fs4::{FileExt, TryLockError};

use super::error::ImageError;
// Every directory or file under construction has this prefix; anything with it
// that is found while holding the lock was left behind by a builder that died.
use crate::metadata::{unique_suffix, TMP_PREFIX};

/// An exclusive `flock(2)` on `<cache>/lock` (through `fs4`, as every lock of
/// the caches), released when dropped (the file is
/// closed). flock locks belong to the open file description, so two threads of one
/// process that each acquire a `Lock` exclude each other as two processes do.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    pub(crate) fn acquire(cache: &Path, progress: &dyn Fn(&str)) -> Result<Lock, ImageError> {
        create_dir_all(cache)?;
        let path = cache.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io("open", &path, e))?;
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::Error(e)) => return Err(ImageError::io("lock", &path, e)),
            Err(TryLockError::WouldBlock) => {
                progress(&format!(
                    "waiting for another process building the guest image (lock {})",
                    path.display()
                ));
                lock_retrying(&file).map_err(|e| ImageError::io("lock", &path, e))?;
            }
        }
        Ok(Lock { _file: file })
    }
}

/// Waits for the exclusive lock, starting again when a signal interrupts the
/// wait.
fn lock_retrying(file: &File) -> io::Result<()> {
    loop {
        match FileExt::lock(file) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub(crate) fn create_dir_all(path: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(|e| ImageError::io("create directory", path, e))
}

/// Where provium caches what it fetches and builds: `$XDG_CACHE_HOME/provium`, else
/// `$HOME/.cache/provium` (a relative or empty `XDG_CACHE_HOME` is ignored, as the
/// XDG base directory specification says), else `provium-cache` in the temporary
/// directory when neither variable is usable.
pub fn cache_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = from_env("XDG_CACHE_HOME") {
        return xdg.join("provium");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".cache").join("provium");
    }
    std::env::temp_dir().join("provium-cache")
}

/// A directory under construction, removed when dropped unless renamed into place.
pub(crate) struct TempDir {
    path: PathBuf,
    done: bool,
}

impl TempDir {
    /// Creates `<parent>/.tmp-<pid>-<nanos>`: same file system as the final name,
    /// so the final `rename` is atomic.
    pub(crate) fn new_in(parent: &Path) -> Result<TempDir, ImageError> {
        create_dir_all(parent)?;
        let path = parent.join(format!("{TMP_PREFIX}{}", unique_suffix()));
        fs::create_dir(&path).map_err(|e| ImageError::io("create directory", &path, e))?;
        Ok(TempDir { path, done: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `dest`, replacing whatever was there (the caller
    /// holds the lock, so nobody else writes `dest`).
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), ImageError> {
        if dest.exists() {
            fs::remove_dir_all(dest).map_err(|e| ImageError::io("remove", dest, e))?;
        }
        fs::rename(&self.path, dest).map_err(|e| ImageError::io("rename into", dest, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes leftovers of builders that died (call with the lock held).
pub(crate) fn remove_stale_temporaries(cache: &Path) {
    for dir in [cache.join("kernel"), cache.join("images")] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
}

pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    fs::write(path, data).map_err(|e| ImageError::io("write", path, e))
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Formats seconds since the epoch as an RFC 3339 UTC timestamp (proleptic
/// Gregorian calendar; days are converted to a civil date through 400-year eras).
pub(crate) fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn lock_excludes_a_second_holder() {
        let dir = std::env::temp_dir().join(format!("provium-lock-test-{}", unique_suffix()));
        let first = Lock::acquire(&dir, &|_| {}).expect("first lock");
        let file = OpenOptions::new()
            .write(true)
            .open(dir.join("lock"))
            .expect("open lock file");
        assert!(matches!(
            FileExt::try_lock(&file),
            Err(TryLockError::WouldBlock)
        ));
        drop(first);
        FileExt::try_lock(&file).expect("free after drop");
        drop(file);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn temp_dir_is_removed_unless_persisted() {
        let parent = std::env::temp_dir().join(format!("provium-tmp-test-{}", unique_suffix()));
        let t = TempDir::new_in(&parent).expect("tmp");
        let p = t.path().to_path_buf();
        assert!(p.is_dir());
        drop(t);
        assert!(!p.exists());
        let t = TempDir::new_in(&parent).expect("tmp");
        write_file(&t.path().join("f"), b"x").expect("write");
        let dest = parent.join("final");
        t.persist(&dest).expect("persist");
        assert_eq!(fs::read(dest.join("f")).expect("read"), b"x");
        let _ = fs::remove_dir_all(&parent);
    }
}
