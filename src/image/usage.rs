//! Which cached images are in use, and when each was last used.
//!
//! Every image directory `images/<key>/` gets two small files besides the
//! image itself:
//!
//! * `last-used`: its modification time is the image's last use (touched by
//!   every process, once, when it first uses the image);
//! * `pin`: a lock file. A process that uses an image holds a shared
//!   `flock(2)` on it until it exits (it may boot the image again at any
//!   time), so a cleaner that gets the exclusive lock knows that nobody uses
//!   the image, and a user that gets the shared lock knows that no cleaner
//!   is removing it.
//!
//! Neither file takes part in the image's validity: a read-only cache still
//! boots, it only cannot record use.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use fs4::{FileExt, TryLockError};

use super::records::ImageManifest;
use crate::metadata::MetadataFile;

/// The file whose modification time is the image's last use.
pub(crate) const LAST_USED: &str = "last-used";
/// The lock file users hold shared and cleaners exclusive.
pub(crate) const PIN: &str = "pin";

/// Pins this process holds, by image directory (kept until exit).
static PINS: Mutex<Option<HashMap<PathBuf, File>>> = Mutex::new(None);

/// Records that this process uses the image in `dir`: pins it (once per
/// process) and touches its `last-used`. `false` when the image is being
/// removed or is gone: the caller must not use it (and builds it again).
pub(crate) fn note_use(dir: &Path) -> bool {
    let mut pins = PINS.lock().unwrap_or_else(|e| e.into_inner());
    let pins = pins.get_or_insert_with(HashMap::new);
    if let Some(held) = pins.get(dir) {
        if same_file(held, &dir.join(PIN)) {
            return true;
        }
        // The directory was replaced (a truncated image rebuilt): pin anew.
        pins.remove(dir);
    }
    let file = match open_pin(dir) {
        Ok(f) => f,
        // A cache we cannot write (mounted read-only, another user's):
        // usable, but its use cannot be recorded.
        Err(e) if is_read_only(&e) => return has_manifest(dir),
        Err(_) => return false,
    };
    match FileExt::try_lock_shared(&file) {
        Ok(()) => {}
        // A cleaner holds it: the image is going away.
        Err(TryLockError::WouldBlock) => return false,
        Err(TryLockError::Error(e)) if is_read_only(&e) => return has_manifest(dir),
        Err(TryLockError::Error(_)) => return false,
    }
    // The cleaner may have removed the directory between our open and our
    // lock (it renames it away first): then the pin is on a deleted file.
    if !has_manifest(dir) {
        return false;
    }
    touch(&dir.join(LAST_USED));
    pins.insert(dir.to_path_buf(), file);
    true
}

/// Whether the image in `dir` is there: it has its manifest (in either
/// format).
fn has_manifest(dir: &Path) -> bool {
    ImageManifest::existing_in(dir).is_some()
}

/// Whether `file` is the file at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn open_pin(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(PIN))
}

fn is_read_only(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}

/// Sets `path`'s modification time to now, creating it; best effort.
fn touch(path: &Path) {
    if let Ok(f) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// When the image in `dir` was last used: `last-used`, else (never used
/// since use was recorded) when it was built (its manifest's time).
pub(crate) fn last_used(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir.join(LAST_USED))
        .ok()
        .or_else(|| ImageManifest::existing_in(dir).and_then(|p| fs::metadata(p).ok()))
        .or_else(|| fs::metadata(dir).ok())
        .and_then(|m| m.modified().ok())
}

/// An exclusive hold on an image's pin: nobody uses the image while it is
/// held, and nobody can start to.
pub(crate) struct Exclusive {
    _file: File,
}

/// Takes the exclusive hold on the image in `dir` (creating its pin file,
/// so that a user arriving meanwhile finds the hold); `None` when some
/// process uses the image (this one included).
pub(crate) fn try_exclusive(dir: &Path) -> io::Result<Option<Exclusive>> {
    if PINS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|p| p.contains_key(dir))
    {
        return Ok(None);
    }
    let file = open_pin(dir)?;
    match FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(Exclusive { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether some process uses the image in `dir` right now. Only looks:
/// an image without a pin file has never been pinned.
pub(crate) fn in_use(dir: &Path) -> bool {
    if PINS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|p| p.contains_key(dir))
    {
        return true;
    }
    let Ok(file) = File::open(dir.join(PIN)) else {
        return false;
    };
    match FileExt::try_lock(&file) {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell (a file system without locks): nothing can remove it.
        Err(TryLockError::Error(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "provium-usage-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(ImageManifest::FILE), "{}").expect("manifest");
        dir
    }

    #[test]
    fn a_used_image_is_pinned_and_stamped() {
        let dir = image_dir("pinned");
        let built = last_used(&dir).expect("manifest time");
        assert!(!in_use(&dir));
        assert!(note_use(&dir));
        assert!(note_use(&dir), "a second use in the same process is fine");
        assert!(dir.join(LAST_USED).is_file());
        assert!(last_used(&dir).expect("stamp") >= built);
        assert!(in_use(&dir), "this process holds the pin");
        assert!(try_exclusive(&dir).expect("probe").is_none());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn looking_leaves_no_pin_file() {
        let dir = image_dir("looking");
        assert!(!in_use(&dir));
        assert!(!dir.join(PIN).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_image_being_removed_is_not_used() {
        let dir = image_dir("removing");
        let hold = try_exclusive(&dir).expect("probe").expect("free");
        assert!(!note_use(&dir), "a cleaner holds it");
        drop(hold);
        fs::remove_file(dir.join(ImageManifest::FILE)).expect("rm");
        assert!(!note_use(&dir), "no manifest: gone");
        let _ = fs::remove_dir_all(&dir);
    }
}
