//! Boot images as the VM layer needs them: the default guest (built once per
//! process, cached on disk by [`crate::image`]), profile initrds with the agent
//! added on top, and the extra cpio segment of `vm:boot{files=...}`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::agent::AGENT;
use super::entry::GuestImage;

/// A file added to the initramfs at boot.
pub struct ExtraFile {
    /// Absolute path of the file in the guest.
    pub path: String,
    /// The file's bytes.
    pub content: Vec<u8>,
    /// Permission bits of the file (only the bits of 0o7777 are used).
    pub mode: u32,
}

static DEFAULT: Mutex<Option<Arc<GuestImage>>> = Mutex::new(None);

/// Reports progress of long work (downloads, image builds): an `info`
/// event, on stderr by default (see [`crate::log`]).
pub fn progress(line: &str) {
    tracing::info!("{line}");
}

/// The default guest image, built or found in the cache on first use.
pub fn default_image_cached() -> Result<Arc<GuestImage>, String> {
    let mut slot = DEFAULT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(img) = slot.as_ref() {
        return Ok(img.clone());
    }
    let img = Arc::new(super::default_image(AGENT, &progress).map_err(|e| e.to_string())?);
    *slot = Some(img.clone());
    Ok(img)
}

/// The initrd for a user profile: the user's initrd (if any) followed by a
/// segment holding the agent as `/init` (later cpio entries win). Cached by
/// content hash.
pub fn profile_initrd(user: Option<&Path>) -> Result<PathBuf, String> {
    let overlay = extra_cpio(&[ExtraFile {
        path: "/init".into(),
        content: AGENT.to_vec(),
        mode: 0o755,
    }])?;
    let mut bytes = match user {
        Some(p) => {
            std::fs::read(p).map_err(|e| format!("cannot read initrd {}: {e}", p.display()))?
        }
        None => Vec::new(),
    };
    bytes.extend_from_slice(&overlay);
    let key = blake3::hash(&bytes).to_hex().to_string();
    let dir = super::cache::cache_dir().join("profiles");
    let path = dir.join(format!("{key}.cpio"));
    if !path.is_file() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(path)
}

/// A newc cpio archive holding `files` (and their parent directories).
pub fn extra_cpio(files: &[ExtraFile]) -> Result<Vec<u8>, String> {
    let list: Vec<(String, Vec<u8>, u32)> = files
        .iter()
        .map(|f| (f.path.clone(), f.content.clone(), f.mode))
        .collect();
    Ok(super::initramfs::extra_cpio(&list))
}
