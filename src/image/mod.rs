//! What a guest boots.
//!
//! * this module — the default guest image: Debian's cloud kernel (booted as a
//!   PVH `vmlinux`) and an initramfs holding the agent as `/init`, static BusyBox
//!   with its applets, the virtio/vsock modules and a minimal `/etc`;
//! * [`boot`] — images as the VM layer needs them: the default image once per
//!   process, profile initrds with the agent on top, extra files;
//! * [`config`] — `provium.toml` profiles;
//! * [`agent`] — the agent binary embedded at build time;
//! * [`gc`] — listing and removing cached images.
//!
//! Everything is built once and cached under [`cache_dir`]:
//!
//! ```text
//! <cache>/lock                      flock(2) taken by whoever fetches or builds
//! <cache>/kernel/current.json       which kernel directory apt's kernel is in
//! <cache>/kernel/<package>_<version>/
//!     record.json                   package, version, release, hashes, sizes, date
//!     vmlinux                       ELF with the PVH note, extracted from the bzImage
//!     config                        the kernel's build configuration
//!     modules/<name>.ko             the modules the images need (uncompressed)
//!     modules.dep                   `name: dep dep` for every extracted module
//!     modules.builtin               names of modules built into the kernel
//!     <file>.deb                    the package itself: exact versions vanish from the
//!                                   archive, so more modules can later be taken from it
//! <cache>/kernel/local-<hash>/      the same, for a `.deb` named by PROVIUM_KERNEL_DEB
//! <cache>/images/<key>/
//!     vmlinux                       hard link to the kernel's vmlinux (copy if that fails)
//!     initrd.cpio                   newc archive, uncompressed
//!     manifest.json                 the inputs the key was computed from, file sizes
//!     last-used                     its modification time is the last use ([`usage`])
//!     pin                           lock file: users hold it shared until they exit
//! ```
//!
//! The metadata files are JSON (module `records`). Caches made by earlier versions have
//! them as `key=value` text (`current`, `record`, `manifest.txt`): such a file is
//! read when its JSON one is absent, and the JSON one written from it, so nothing is
//! fetched or built again (keys hash the inputs, not these files); the text file
//! stays for those versions.
//!
//! A new image makes the old ones useless to this build; builders remove all
//! but the [`gc::AUTO_KEEP_RECENT`] most recently used others (never one in
//! use), and `provium image gc` does the same on demand ([`gc`]).
//!
//! `key` is a blake3 hash over a format version, the kernel package identity (name,
//! version, hash of the `.deb`), the module files in load order, the BusyBox binary
//! and the agent binary. Directories are built under a temporary name in the same
//! parent and renamed into place, so readers never see a half-written entry; the
//! lock keeps two processes from downloading or building the same thing twice.

pub mod agent;
pub mod boot;
mod cache;
pub mod config;
mod debian;
mod entry;
mod error;
pub mod gc;
mod initramfs;
mod kernel;
mod modindex;
mod modules;
mod records;
mod usage;
mod vmlinux;

use std::path::{Path, PathBuf};

pub use cache::cache_dir;
pub use entry::GuestImage;
pub use error::ImageError;
pub use gc::{CachedImage, GcReport};
pub use initramfs::extra_cpio;
use modules::Module;

/// The modules every default guest loads, in the order asked for; their
/// dependencies are added and everything is ordered dependencies-first.
/// `virtio_mmio` serves QEMU's microvm machine, `virtio_pci` q35, `virtio_console`
/// the virtio-serial transport, `virtio_balloon` free page reporting (loaded by
/// the agent after boot, at idle priority).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_console",
    "virtio_balloon",
];

/// Names more modules (comma- or space-separated) to put into the default image.
const EXTRA_MODULES_ENV: &str = "PROVIUM_EXTRA_MODULES";

/// Returns the default guest image for `agent` (the static agent binary, which
/// becomes `/init`), fetching the kernel and building the initramfs on first use.
/// `progress` receives one human-readable line per step of a fetch or build; a
/// cached image is returned silently, in a few milliseconds.
///
/// `PROVIUM_KERNEL_DEB=/path/to.deb` takes the kernel from a local package instead
/// of apt; `PROVIUM_EXTRA_MODULES=a,b` adds modules (with their dependencies).
pub fn default_image(agent: &[u8], progress: &dyn Fn(&str)) -> Result<GuestImage, ImageError> {
    build_image(&default_spec(), &Init::Agent(agent), progress)
}

/// The default guest image for `agent` if it is in the cache; never fetches,
/// builds or writes anything, nor records a use (`None` when it would have
/// to be built).
pub fn cached_default_image(agent: &[u8]) -> Result<Option<GuestImage>, ImageError> {
    let spec = default_spec();
    check_static_agent(agent)?;
    let busybox = load_busybox(&spec.busybox)?;
    find_cached(&spec, &busybox, agent)
}

fn default_spec() -> ImageSpec {
    let mut wanted: Vec<String> = DEFAULT_MODULES.iter().map(|m| m.to_string()).collect();
    if let Some(extra) = std::env::var_os(EXTRA_MODULES_ENV) {
        for name in extra
            .to_string_lossy()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
        {
            wanted.push(name.to_string());
        }
    }
    ImageSpec {
        cache: cache_dir(),
        kernel_deb: std::env::var_os(kernel::KERNEL_DEB_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        modules: wanted,
        busybox: PathBuf::from(BUSYBOX),
    }
}

/// An image from the default guest's kernel whose `/init` is `script` (run by
/// the image's BusyBox `sh`), with `modules` and their dependencies in
/// `/lib/modules/provium` (`order` lists them dependencies-first). Cached like
/// the default image. `scripts/host-matrix` boots its nested hosts with one.
pub fn script_image(
    script: &[u8],
    modules: &[&str],
    progress: &dyn Fn(&str),
) -> Result<GuestImage, ImageError> {
    let spec = ImageSpec {
        cache: cache_dir(),
        kernel_deb: std::env::var_os(kernel::KERNEL_DEB_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        modules: modules.iter().map(|m| m.to_string()).collect(),
        busybox: PathBuf::from(BUSYBOX),
    };
    build_image(&spec, &Init::Script(script), progress)
}

/// Where the host's static BusyBox is expected (Debian's busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// Everything besides `/init` that selects an image.
struct ImageSpec {
    cache: PathBuf,
    /// A local kernel package to use instead of apt's.
    kernel_deb: Option<PathBuf>,
    /// Module names wanted (dependencies are added).
    modules: Vec<String>,
    busybox: PathBuf,
}

/// What becomes `/init`.
enum Init<'a> {
    /// The agent: must be a static ELF executable.
    Agent(&'a [u8]),
    /// A shell script (or anything else); not checked.
    Script(&'a [u8]),
}

impl Init<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Init::Agent(b) | Init::Script(b) => b,
        }
    }
}

/// Bumped whenever the layout of the image changes, so old cache entries are not reused.
const FORMAT_VERSION: &str = "provium-guest-image/1";

fn build_image(
    spec: &ImageSpec,
    init: &Init<'_>,
    progress: &dyn Fn(&str),
) -> Result<GuestImage, ImageError> {
    if let Init::Agent(agent) = init {
        check_static_agent(agent)?;
    }
    let busybox = load_busybox(&spec.busybox)?;
    let init_bytes = init.bytes();

    // Fast path: everything is in the cache already; no lock, no apt; the
    // only writes record the use (see `usage`).
    if let Some(image) = find_cached(spec, &busybox, init_bytes)? {
        if usage::note_use(&image_dir(&image)) {
            return Ok(image);
        }
    }

    // Slow path, under the cache lock: fetch what is missing, then build.
    let _lock = cache::Lock::acquire(&spec.cache, progress)?;
    cache::remove_stale_temporaries(&spec.cache);
    let kernel = match &spec.kernel_deb {
        Some(deb) => kernel::from_local_deb(&spec.cache, deb, &spec.modules, progress)?,
        None => match kernel::recorded(&spec.cache)? {
            Some(kernel) => kernel,
            None => kernel::fetch_from_apt(&spec.cache, &spec.modules, progress)?,
        },
    };
    let mods = kernel.ensure_modules(&spec.modules, progress)?;
    let key = image_key(&kernel, &mods, &busybox.hash, init_bytes);
    if let Some(image) = entry::cached_image(&spec.cache, &key, &kernel)? {
        // Under the lock no cleaner runs: the image stays.
        usage::note_use(&image_dir(&image));
        return Ok(image);
    }
    let applets = busybox_applets(&spec.busybox)?;
    let tree = initramfs::main_tree(&initramfs::Inputs {
        init: init_bytes,
        busybox: &busybox.bytes,
        applets: &applets,
        modules: &mods,
    });
    let initrd = tree.to_cpio();
    progress(&format!(
        "building initramfs ({} files, {} KB)",
        tree.len(),
        initrd.len().div_ceil(1024)
    ));
    let manifest = manifest(&key, &kernel, &mods, &busybox.hash, init_bytes, &initrd);
    let image = entry::store_image(&spec.cache, &key, &kernel, &initrd, &manifest)?;
    usage::note_use(&image_dir(&image));
    progress(&format!(
        "guest image ready: {} (key {})",
        image_dir(&image).display(),
        &key[..16]
    ));
    // Every new image would otherwise stay forever: keep a few.
    match gc::collect_in(&spec.cache, gc::AUTO_KEEP_RECENT, &[key]) {
        Ok(report) if !report.removed.is_empty() => progress(&format!(
            "removed {} unused guest image(s) ({} KB)",
            report.removed.len(),
            report.freed_bytes / 1024
        )),
        Ok(_) => {}
        Err(e) => progress(&format!("could not remove unused guest images: {e}")),
    }
    Ok(image)
}

/// The directory of a cached image.
fn image_dir(image: &GuestImage) -> PathBuf {
    image
        .initrd
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The image of `spec` and `init` if the cache has it complete (no lock, no
/// writes).
fn find_cached(
    spec: &ImageSpec,
    busybox: &Busybox,
    init: &[u8],
) -> Result<Option<GuestImage>, ImageError> {
    let Some(kernel) = kernel::cached(&spec.cache, spec.kernel_deb.as_deref())? else {
        return Ok(None);
    };
    let Some(mods) = kernel.cached_modules(&spec.modules)? else {
        return Ok(None);
    };
    let key = image_key(&kernel, &mods, &busybox.hash, init);
    entry::cached_image(&spec.cache, &key, &kernel)
}

struct Busybox {
    bytes: Vec<u8>,
    hash: blake3::Hash,
}

fn load_busybox(path: &Path) -> Result<Busybox, ImageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::BusyboxMissing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(ImageError::io("read", path, e)),
    };
    match vmlinux::elf_interpreter(&bytes) {
        Ok(false) => {}
        Ok(true) => {
            return Err(ImageError::BusyboxNotStatic {
                path: path.to_path_buf(),
            })
        }
        Err(_) => {
            return Err(ImageError::BusyboxMissing {
                path: path.to_path_buf(),
            })
        }
    }
    let hash = blake3::hash(&bytes);
    Ok(Busybox { bytes, hash })
}

/// `busybox --list-full`: applet paths such as `bin/sh`, `usr/bin/logger`.
fn busybox_applets(path: &Path) -> Result<Vec<String>, ImageError> {
    let command = format!("{} --list-full", path.display());
    let out = std::process::Command::new(path)
        .arg("--list-full")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ImageError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ImageError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| initramfs::is_plain_relative_path(l) && *l != "bin/busybox")
        .map(str::to_string)
        .collect();
    if applets.is_empty() {
        return Err(ImageError::Command {
            command,
            detail: "it listed no applets".into(),
        });
    }
    Ok(applets)
}

fn check_static_agent(agent: &[u8]) -> Result<(), ImageError> {
    match vmlinux::elf_interpreter(agent) {
        Ok(false) => Ok(()),
        Ok(true) => Err(ImageError::AgentNotStatic {
            detail: "it names an ELF interpreter (dynamically linked)".into(),
        }),
        Err(detail) => Err(ImageError::AgentNotStatic { detail }),
    }
}

fn image_key(
    kernel: &kernel::Kernel,
    mods: &[Module],
    busybox: &blake3::Hash,
    init: &[u8],
) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("format", FORMAT_VERSION.as_bytes());
    field("kernel", kernel.identity().as_bytes());
    for m in mods {
        field("module", m.name.as_bytes());
        field("module-bytes", &m.bytes);
    }
    field("busybox", busybox.as_bytes());
    field("init", blake3::hash(init).as_bytes());
    h.finalize().to_hex().to_string()
}

fn manifest(
    key: &str,
    kernel: &kernel::Kernel,
    mods: &[Module],
    busybox: &blake3::Hash,
    init: &[u8],
    initrd: &[u8],
) -> records::ImageManifest {
    records::ImageManifest {
        key: key.to_string(),
        format: FORMAT_VERSION.to_string(),
        kernel_package: kernel.package_id(),
        kernel_release: kernel.release.clone(),
        kernel_deb_blake3: kernel.deb_blake3.clone(),
        kernel_dir: kernel.dir.display().to_string(),
        modules: mods.iter().map(|m| m.name.clone()).collect(),
        busybox_blake3: busybox.to_hex().to_string(),
        init_blake3: blake3::hash(init).to_hex().to_string(),
        initrd_size: initrd.len() as u64,
        // Set by `entry::store_image`, which makes the file.
        vmlinux_size: 0,
        built: cache::utc_now(),
    }
}

#[cfg(test)]
mod tests;
