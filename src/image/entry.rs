//! The `images/<key>/` entries of the cache: finding a complete one, and
//! storing a new one.

use std::fs;
use std::path::{Path, PathBuf};

use super::cache::{write_file, TempDir};
use super::error::ImageError;
use super::kernel::Kernel;
use super::records::ImageManifest;
use crate::metadata::{MetadataError, MetadataFile};

/// A built guest: what QEMU needs to boot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// `vmlinux`: an ELF image with the PVH entry note, for `-kernel`.
    pub kernel: PathBuf,
    /// The initramfs: an uncompressed newc cpio archive, for `-initrd`.
    pub initrd: PathBuf,
    /// blake3 (hex) of every input of the image.
    pub key: String,
    /// The kernel's release, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    /// The Debian package the kernel came from, as `name=version`.
    pub kernel_package: String,
}

/// The kernel, a hard link to the kernel directory's `vmlinux`.
pub(crate) const VMLINUX: &str = "vmlinux";
/// The initramfs.
pub(crate) const INITRD: &str = "initrd.cpio";

fn image_for(dir: &Path, key: &str, kernel: &Kernel) -> GuestImage {
    GuestImage {
        kernel: dir.join(VMLINUX),
        initrd: dir.join(INITRD),
        key: key.to_string(),
        kernel_release: kernel.release.clone(),
        kernel_package: kernel.package_id(),
    }
}

/// The complete entry `images/<key>/`, if there is one. The directory appears by an
/// atomic rename, so its presence means complete; the sizes recorded in the
/// manifest are checked as well, to catch a file truncated by a crash. An
/// unreadable manifest means no entry: building one replaces it.
pub(crate) fn cached_image(
    cache: &Path,
    key: &str,
    kernel: &Kernel,
) -> Result<Option<GuestImage>, ImageError> {
    let dir = cache.join("images").join(key);
    let manifest = match ImageManifest::read_in(&dir) {
        Ok(Some(manifest)) => manifest,
        Ok(None) | Err(MetadataError::Malformed { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let size_ok = |file: &str, want: u64| -> bool {
        fs::metadata(dir.join(file)).is_ok_and(|m| m.len() == want)
    };
    if manifest.key != key
        || !size_ok(INITRD, manifest.initrd_size)
        || !size_ok(VMLINUX, manifest.vmlinux_size)
    {
        return Ok(None);
    }
    Ok(Some(image_for(&dir, key, kernel)))
}

/// Writes `images/<key>/` (call with the lock held).
pub(crate) fn store_image(
    cache: &Path,
    key: &str,
    kernel: &Kernel,
    initrd: &[u8],
    manifest: &ImageManifest,
) -> Result<GuestImage, ImageError> {
    let images = cache.join("images");
    let tmp = TempDir::new_in(&images)?;
    let src = kernel.vmlinux();
    let vmlinux = tmp.path().join(VMLINUX);
    // A hard link costs nothing: the 50 MB vmlinux is shared by every image of the
    // same kernel (a new agent build makes a new image).
    if fs::hard_link(&src, &vmlinux).is_err() {
        fs::copy(&src, &vmlinux).map_err(|e| ImageError::io("copy", &src, e))?;
    }
    let vmlinux_size = fs::metadata(&vmlinux)
        .map_err(|e| ImageError::io("stat", &vmlinux, e))?
        .len();
    write_file(&tmp.path().join(INITRD), initrd)?;
    let manifest = ImageManifest {
        vmlinux_size,
        ..manifest.clone()
    };
    manifest.write_in(tmp.path())?;
    let dest = images.join(key);
    tmp.persist(&dest)?;
    Ok(image_for(&dest, key, kernel))
}
