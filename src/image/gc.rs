//! What the image cache holds, and removing the images nobody needs.
//!
//! Every change of the agent, of BusyBox or of the kernel makes a new image
//! (`images/<key>/`), and nothing ever reuses the old ones. Garbage
//! collection keeps the images it is told to protect (the current default)
//! and the N most recently used others (module `usage`), and removes the
//! rest, except images some process uses right now (it holds their pin).
//! Builders run it on their own after storing a new image
//! ([`AUTO_KEEP_RECENT`]); `provium image gc` runs it on demand.
//!
//! An image's `vmlinux` is a hard link to its kernel's (`kernel/<package>/`),
//! so removing images frees their initramfs; the kernels stay.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::cache;
use super::error::ImageError;
use super::records::ImageManifest;
use super::usage;
use crate::metadata::MetadataFile;

/// How many images besides the one just built a builder keeps (the most
/// recently used ones); the rest are removed unless in use.
pub const AUTO_KEEP_RECENT: usize = 4;

/// One directory of `images/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// Its key (the directory name).
    pub key: String,
    /// The image's directory, `images/<key>` in the cache.
    pub dir: PathBuf,
    /// The guest kernel's release, from the manifest.
    pub kernel_release: Option<String>,
    /// The Debian package of the kernel (`name=version`), from the manifest.
    pub kernel_package: Option<String>,
    /// When it was built (RFC 3339 UTC), from the manifest.
    pub built: Option<String>,
    /// When it was last used (or built, before use was recorded).
    pub last_used: Option<SystemTime>,
    /// Disk space that only this image takes (freed by removing it).
    pub own_bytes: u64,
    /// Disk space of files shared with its kernel and other images (the
    /// `vmlinux` hard link): not freed by removing the image.
    pub shared_bytes: u64,
    /// Whether it has its manifest; a directory without one is debris.
    pub complete: bool,
    /// Whether some process holds its pin (uses it) right now.
    pub in_use: bool,
}

/// What [`collect_garbage`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The images removed.
    pub removed: Vec<CachedImage>,
    /// Images that were due for removal but are in use, so kept.
    pub kept_in_use: Vec<CachedImage>,
    /// Disk space freed.
    pub freed_bytes: u64,
}

/// The images in the cache ([`super::cache_dir`]), most recently used first.
pub fn list_images() -> Result<Vec<CachedImage>, ImageError> {
    list_in(&cache::cache_dir())
}

pub(crate) fn list_in(cache: &Path) -> Result<Vec<CachedImage>, ImageError> {
    let images = cache.join("images");
    let entries = match fs::read_dir(&images) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("list", &images, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", &images, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `.tmp-*`: under construction or being removed.
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        out.push(describe(&entry.path(), name));
    }
    sort_by_use(&mut out);
    Ok(out)
}

fn describe(dir: &Path, key: String) -> CachedImage {
    let manifest = ImageManifest::read_in(dir).ok().flatten();
    let field =
        |get: fn(ImageManifest) -> String| manifest.clone().map(get).filter(|v| !v.is_empty());
    let (own_bytes, shared_bytes) = sizes(dir);
    CachedImage {
        kernel_release: field(|m| m.kernel_release),
        kernel_package: field(|m| m.kernel_package),
        built: field(|m| m.built),
        last_used: usage::last_used(dir),
        own_bytes,
        shared_bytes,
        complete: ImageManifest::existing_in(dir).is_some(),
        in_use: usage::in_use(dir),
        key,
        dir: dir.to_path_buf(),
    }
}

/// Allocated bytes of the files in `dir`: (only here, hard-linked elsewhere).
fn sizes(dir: &Path) -> (u64, u64) {
    let (mut own, mut shared) = (0, 0);
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = entry.metadata() else { continue };
        let bytes = m.blocks() * 512;
        if m.is_file() && m.nlink() > 1 {
            shared += bytes;
        } else {
            own += bytes;
        }
    }
    (own, shared)
}

/// Most recently used first (never-used debris last); ties by key.
fn sort_by_use(images: &mut [CachedImage]) {
    images.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
}

/// The keys garbage collection removes from `images`: every image but
/// those in `protect` and the `keep_recent` most recently used others.
/// Debris (no manifest) never counts as one to keep.
pub fn select_for_removal(
    images: &[CachedImage],
    keep_recent: usize,
    protect: &[String],
) -> Vec<String> {
    let mut sorted: Vec<&CachedImage> = images.iter().collect();
    sorted.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
    let mut kept = 0;
    let mut out = Vec::new();
    for image in sorted {
        if protect.contains(&image.key) {
            continue;
        }
        if image.complete && kept < keep_recent {
            kept += 1;
            continue;
        }
        out.push(image.key.clone());
    }
    out
}

/// Removes every image but those in `protect` and the `keep_recent` most
/// recently used others, skipping images in use; also removes leftovers of
/// builders that died. Takes the cache lock (waits for a builder, saying
/// so through `progress`).
pub fn collect_garbage(
    keep_recent: usize,
    protect: &[String],
    progress: &dyn Fn(&str),
) -> Result<GcReport, ImageError> {
    let cache = cache::cache_dir();
    if !cache.join("images").is_dir() {
        return Ok(GcReport::default());
    }
    let _lock = cache::Lock::acquire(&cache, progress)?;
    cache::remove_stale_temporaries(&cache);
    collect_in(&cache, keep_recent, protect)
}

/// [`collect_garbage`] in `cache`; call with the cache lock held.
pub(crate) fn collect_in(
    cache: &Path,
    keep_recent: usize,
    protect: &[String],
) -> Result<GcReport, ImageError> {
    let images = list_in(cache)?;
    let doomed: HashSet<String> = select_for_removal(&images, keep_recent, protect)
        .into_iter()
        .collect();
    let mut report = GcReport::default();
    for image in images.into_iter().filter(|i| doomed.contains(&i.key)) {
        let hold = usage::try_exclusive(&image.dir)
            .map_err(|e| ImageError::io("lock", &image.dir.join(usage::PIN), e))?;
        let Some(_hold) = hold else {
            report.kept_in_use.push(image);
            continue;
        };
        // Out of sight first (one rename), then deleted: a user that opened
        // the pin before the rename finds no manifest and builds anew.
        let tmp = cache::TempDir::new_in(&cache.join("images"))?;
        let away = tmp.path().join("image");
        fs::rename(&image.dir, &away).map_err(|e| ImageError::io("move", &image.dir, e))?;
        drop(tmp); // removes the temporary directory and the image in it
        report.freed_bytes += image.own_bytes;
        report.removed.push(image);
    }
    Ok(report)
}

/// Disk space the provium cache takes, fixture cache excluded (files
/// linked more than once counted once).
pub fn cache_disk_usage() -> u64 {
    let skip = crate::fixtures::cache_dir();
    let mut seen = HashSet::new();
    du(&cache::cache_dir(), &skip, &mut seen)
}

fn du(path: &Path, skip: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    if path == skip {
        return 0;
    }
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !seen.insert((m.dev(), m.ino())) {
        return 0;
    }
    let mut total = m.blocks() * 512;
    if m.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            total += du(&entry.path(), skip, seen);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn image(key: &str, used_secs_ago: Option<u64>) -> CachedImage {
        CachedImage {
            key: key.into(),
            dir: PathBuf::from(key),
            kernel_release: None,
            kernel_package: None,
            built: None,
            last_used: used_secs_ago
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - s)),
            own_bytes: 10,
            shared_bytes: 0,
            complete: true,
            in_use: false,
        }
    }

    #[test]
    fn keeps_the_protected_and_the_most_recently_used() {
        let images = vec![
            image("old", Some(900)),
            image("default", Some(800)),
            image("newest", Some(1)),
            image("recent", Some(10)),
            image("unstamped", None),
        ];
        let protect = vec!["default".to_string()];
        let mut gone = select_for_removal(&images, 2, &protect);
        gone.sort();
        assert_eq!(gone, ["old", "unstamped"]);
        let mut gone = select_for_removal(&images, 0, &protect);
        gone.sort();
        assert_eq!(gone, ["newest", "old", "recent", "unstamped"]);
        assert!(select_for_removal(&images, 10, &protect).is_empty());
        assert_eq!(select_for_removal(&images, 4, &[]), ["unstamped"]);
    }

    #[test]
    fn debris_is_never_kept_and_ties_are_broken_by_key() {
        let mut debris = image("debris", Some(0));
        debris.complete = false;
        let images = vec![debris, image("b", Some(5)), image("a", Some(5))];
        assert_eq!(select_for_removal(&images, 1, &[]), ["debris", "b"]);
    }

    fn temp_cache(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "provium-gc-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn fake_image(cache: &Path, key: &str, age_secs: u64) -> PathBuf {
        let dir = cache.join("images").join(key);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("initrd.cpio"), vec![7u8; 20_000]).expect("initrd");
        fs::write(cache.join(format!("vmlinux-{key}")), b"kernel").expect("kernel");
        fs::hard_link(cache.join(format!("vmlinux-{key}")), dir.join("vmlinux")).expect("link");
        let manifest = ImageManifest {
            key: key.into(),
            format: "provium-guest-image/1".into(),
            kernel_package: "linux-image-test=1".into(),
            kernel_release: "6.1-test".into(),
            kernel_deb_blake3: "00".repeat(32),
            kernel_dir: cache.join("kernel/test").display().to_string(),
            modules: vec!["virtio_mmio".into()],
            busybox_blake3: "11".repeat(32),
            init_blake3: "22".repeat(32),
            initrd_size: 20_000,
            vmlinux_size: 6,
            built: "2026-01-01T00:00:00Z".into(),
        };
        manifest.write_in(&dir).expect("manifest");
        let used = fs::File::create(dir.join(usage::LAST_USED)).expect("stamp");
        used.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .expect("mtime");
        dir
    }

    #[test]
    fn collects_all_but_the_kept_and_the_used() {
        let cache = temp_cache("collect");
        fake_image(&cache, "current", 500);
        fake_image(&cache, "recent", 10);
        let old = fake_image(&cache, "old", 300);
        // Built by an earlier version: a `key=value` manifest.
        fs::remove_file(old.join(ImageManifest::FILE)).expect("rm");
        fs::write(
            old.join(ImageManifest::LEGACY_FILE),
            "built=2025-01-01T00:00:00Z\nbusybox_blake3=11\nformat=provium-guest-image/1\n\
             init_blake3=22\ninitrd_size=20000\nkernel_deb_blake3=00\nkernel_dir=/k\n\
             kernel_package=linux-image-old=1\nkernel_release=6.0-old\nkey=old\n\
             modules=virtio_mmio\nvmlinux_size=6\n",
        )
        .expect("legacy manifest");
        let busy = fake_image(&cache, "busy", 400);
        fs::create_dir_all(cache.join("images/.tmp-123-x")).expect("tmp");
        assert!(usage::note_use(&busy), "this process uses it");

        let listed = list_in(&cache).expect("list");
        let keys: Vec<&str> = listed.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["busy", "recent", "old", "current"], "by last use");
        let busy_info = &listed[0];
        assert!(busy_info.in_use && busy_info.complete);
        assert_eq!(busy_info.kernel_release.as_deref(), Some("6.1-test"));
        assert!(busy_info.own_bytes >= 20_000 && busy_info.shared_bytes > 0);
        let old_info = &listed[2];
        assert!(old_info.complete);
        assert_eq!(old_info.kernel_release.as_deref(), Some("6.0-old"));
        assert_eq!(old_info.built.as_deref(), Some("2025-01-01T00:00:00Z"));
        assert!(old.join(ImageManifest::FILE).is_file(), "migrated");

        let report = collect_in(&cache, 0, &["current".to_string()]).expect("gc");
        let removed: Vec<&str> = report.removed.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(removed, ["recent", "old"]);
        assert_eq!(report.kept_in_use.len(), 1);
        assert!(report.freed_bytes >= 40_000);
        let left: Vec<String> = list_in(&cache)
            .expect("list")
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(left, ["busy", "current"]);
        assert!(cache.join("vmlinux-old").is_file(), "the kernel stays");
        let _ = fs::remove_dir_all(&cache);
    }
}
