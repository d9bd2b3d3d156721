//! The guest kernel: Debian's cloud kernel, resolved and fetched with apt once,
//! then used from the cache without touching apt again (exact versions vanish from
//! the archive, so what was fetched is recorded in `kernel/current.json`).
//!
//! Fetching and reading the package is [`super::debian`]'s job.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cache::{self, TempDir};
use super::debian::{
    apt_download, apt_show, deb_identity, kernel_dependency, mb, scan_deb, DebContents,
};
use super::error::ImageError;
use super::modindex::Index;
use super::modules::Module;
use super::modules::{self, ResolveError};
use super::records::{CurrentKernel, KernelRecord};
use super::vmlinux;
use crate::metadata::{self, MetadataFile};

/// Names a local `.deb` to take the kernel from instead of apt.
pub(crate) const KERNEL_DEB_ENV: &str = "PROVIUM_KERNEL_DEB";

/// The meta package whose dependency is the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

const MODULES: &str = "modules";

/// A kernel in the cache: `<cache>/kernel/<dir>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kernel {
    pub dir: PathBuf,
    pub package: String,
    pub version: String,
    pub release: String,
    /// File name of the kept `.deb` inside `dir`.
    pub deb_file: String,
    pub deb_blake3: String,
}

impl Kernel {
    /// Reads `<dir>/record.json`; `Ok(None)` if there is no such kernel.
    fn load(dir: &Path) -> Result<Option<Kernel>, ImageError> {
        let Some(r) = KernelRecord::read_in(dir).map_err(ImageError::kernel_record)? else {
            return Ok(None);
        };
        Ok(Some(Kernel {
            dir: dir.to_path_buf(),
            package: r.package,
            version: r.version,
            release: r.release,
            deb_file: r.deb,
            deb_blake3: r.deb_blake3,
        }))
    }

    /// `name=version`.
    pub(crate) fn package_id(&self) -> String {
        format!("{}={}", self.package, self.version)
    }

    /// What identifies the kernel in an image key: package, version and the hash
    /// of the package file.
    pub(crate) fn identity(&self) -> String {
        format!("{} {}", self.package_id(), self.deb_blake3)
    }

    pub(crate) fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    fn deb(&self) -> PathBuf {
        self.dir.join(&self.deb_file)
    }

    /// The modules `wanted` needs, in load order, if all are extracted already.
    pub(crate) fn cached_modules(
        &self,
        wanted: &[String],
    ) -> Result<Option<Vec<Module>>, ImageError> {
        let index = Index::read(&self.dir)?;
        let order = match modules::load_order(wanted, &index.builtin, &mut |name| {
            Ok(index.deps.get(name).cloned())
        }) {
            Ok(order) => order,
            Err(ResolveError::Missing(_)) => return Ok(None),
            Err(e) => return Err(resolve_error(e, &self.package_id())),
        };
        let mut out = Vec::with_capacity(order.len());
        for name in order {
            let path = self.dir.join(MODULES).join(format!("{name}.ko"));
            match fs::read(&path) {
                Ok(bytes) => out.push(Module { name, bytes }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ImageError::io("read", &path, e)),
            }
        }
        Ok(Some(out))
    }

    /// Like [`Kernel::cached_modules`], extracting missing modules from the kept
    /// package first (call with the cache lock held).
    pub(crate) fn ensure_modules(
        &self,
        wanted: &[String],
        progress: &dyn Fn(&str),
    ) -> Result<Vec<Module>, ImageError> {
        if let Some(mods) = self.cached_modules(wanted)? {
            return Ok(mods);
        }
        let deb = self.deb();
        if !deb.is_file() {
            return Err(ImageError::Package {
                path: deb,
                detail: format!(
                    "the package kept to extract more modules from is gone; delete {} to fetch the kernel again",
                    self.dir.display()
                ),
            });
        }
        progress(&format!(
            "extracting modules {} from {}",
            wanted.join(" "),
            self.deb_file
        ));
        let contents = scan_deb(&deb, false)?;
        let resolved = resolve_modules(&contents, wanted, &self.package_id())?;
        let mut index = Index::read(&self.dir)?;
        let dir = self.dir.join(MODULES);
        cache::create_dir_all(&dir)?;
        for m in &resolved {
            metadata::write_atomic(&dir.join(format!("{}.ko", m.module.name)), &m.module.bytes)?;
            index.deps.insert(m.module.name.clone(), m.deps.clone());
        }
        index.builtin.extend(contents.builtin);
        index.write(&self.dir)?;
        Ok(resolved.into_iter().map(|m| m.module).collect())
    }
}

fn resolve_error(e: ResolveError, package: &str) -> ImageError {
    match e {
        ResolveError::Missing(module) => ImageError::ModuleMissing {
            module,
            package: package.to_string(),
        },
        ResolveError::Cycle(cycle) => ImageError::ModuleCycle {
            package: package.to_string(),
            cycle: cycle.join(" -> "),
        },
        ResolveError::Unreadable(module, detail) => ImageError::Modinfo { module, detail },
    }
}

/// The kernel a cache lookup without the lock may use: the one named by
/// `PROVIUM_KERNEL_DEB` if that is set, else the one recorded in `current.json`.
pub(crate) fn cached(cache: &Path, local_deb: Option<&Path>) -> Result<Option<Kernel>, ImageError> {
    match local_deb {
        Some(deb) => {
            let hash = hash_file(deb)?;
            Kernel::load(&local_dir(cache, &hash))
        }
        None => recorded(cache),
    }
}

fn local_dir(cache: &Path, deb_blake3: &str) -> PathBuf {
    cache
        .join("kernel")
        .join(format!("local-{}", &deb_blake3[..16]))
}

/// The kernel recorded in `kernel/current.json`, if it is still in the cache.
pub(crate) fn recorded(cache: &Path) -> Result<Option<Kernel>, ImageError> {
    let kernels = cache.join("kernel");
    let Some(CurrentKernel { dir }) =
        CurrentKernel::read_in(&kernels).map_err(ImageError::kernel_record)?
    else {
        return Ok(None);
    };
    if dir.is_empty() || dir.contains('/') || dir.starts_with('.') {
        return Err(ImageError::Record {
            path: kernels.join(CurrentKernel::FILE),
            detail: format!("bad dir {dir:?}"),
        });
    }
    Kernel::load(&cache.join("kernel").join(dir))
}

fn hash_file(path: &Path) -> Result<String, ImageError> {
    let mut f = fs::File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h).map_err(|e| ImageError::io("read", path, e))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Takes the kernel from a local package (`PROVIUM_KERNEL_DEB`), caching it under
/// `kernel/local-<hash>/`; `kernel/current.json` is left alone.
pub(crate) fn from_local_deb(
    cache: &Path,
    deb: &Path,
    wanted: &[String],
    progress: &dyn Fn(&str),
) -> Result<Kernel, ImageError> {
    let hash = hash_file(deb)?;
    let dest = local_dir(cache, &hash);
    if let Some(k) = Kernel::load(&dest)? {
        return Ok(k);
    }
    progress(&format!(
        "using kernel package {} ({KERNEL_DEB_ENV})",
        deb.display()
    ));
    let tmp = TempDir::new_in(&cache.join("kernel"))?;
    let file_name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deb"))
        .unwrap_or_else(|| "kernel.deb".to_string());
    let kept = tmp.path().join(&file_name);
    fs::copy(deb, &kept).map_err(|e| ImageError::io("copy", deb, e))?;
    let origin = Origin {
        source: format!("file {}", deb.display()),
        deb_sha256: None,
    };
    install(tmp, &kept, &hash, origin, &dest, wanted, progress)
}

/// Resolves the package behind `linux-image-cloud-amd64`, downloads it with
/// `apt-get download`, unpacks it into `kernel/<package>_<version>/` and records
/// it in `kernel/current.json` (call with the cache lock held).
pub(crate) fn fetch_from_apt(
    cache: &Path,
    wanted: &[String],
    progress: &dyn Fn(&str),
) -> Result<Kernel, ImageError> {
    progress(&format!("resolving {META_PACKAGE} …"));
    let meta = apt_show(META_PACKAGE)?;
    let depends = meta.get("Depends").map(String::as_str).unwrap_or("");
    let (package, pinned) = kernel_dependency(depends).ok_or_else(|| ImageError::Resolve {
        package: META_PACKAGE.into(),
        detail: format!("no linux-image-* dependency in \"Depends: {depends}\""),
    })?;
    let info = match &pinned {
        Some(v) => apt_show(&format!("{package}={v}"))?,
        None => apt_show(&package)?,
    };
    let version = info
        .get("Version")
        .cloned()
        .ok_or_else(|| ImageError::Resolve {
            package: package.clone(),
            detail: "apt-cache show printed no Version".into(),
        })?;
    let size: Option<u64> = info.get("Size").and_then(|s| s.parse().ok());
    progress(&format!(
        "downloading {package}={version}{}",
        size.map(|s| format!(" ({})", mb(s))).unwrap_or_default()
    ));
    let kernel_dir = cache.join("kernel");
    let tmp = TempDir::new_in(&kernel_dir)?;
    let deb = apt_download(&package, &version, tmp.path(), size, progress)?;
    let (got_package, got_version) = deb_identity(&deb)?;
    if got_package != package || got_version != version {
        return Err(ImageError::Package {
            path: deb,
            detail: format!("it is {got_package}={got_version}, not {package}={version}"),
        });
    }
    let hash = hash_file(&deb)?;
    let origin = Origin {
        source: format!("apt {META_PACKAGE}"),
        // Checked by apt-get against the archive's signed index while downloading.
        deb_sha256: info.get("SHA256").cloned(),
    };
    let dest = kernel_dir.join(dir_name(&package, &version));
    let kernel = install(tmp, &deb, &hash, origin, &dest, wanted, progress)?;
    let current = CurrentKernel {
        dir: dir_name(&package, &version),
    };
    current.write_in(&kernel_dir)?;
    Ok(kernel)
}

/// `<package>_<version>`, with anything unusual in a file name replaced.
fn dir_name(package: &str, version: &str) -> String {
    format!("{package}_{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+~-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a kernel package came from, for its record.
struct Origin {
    /// `apt <meta package>` or `file <path>`.
    source: String,
    /// The archive's SHA-256 of the package, when apt fetched it.
    deb_sha256: Option<String>,
}

/// Unpacks `deb` (inside `tmp`) into `tmp`, writes the record and renames `tmp`
/// to `dest`.
fn install(
    tmp: TempDir,
    deb: &Path,
    deb_blake3: &str,
    origin: Origin,
    dest: &Path,
    wanted: &[String],
    progress: &dyn Fn(&str),
) -> Result<Kernel, ImageError> {
    let deb_size = fs::metadata(deb)
        .map_err(|e| ImageError::io("stat", deb, e))?
        .len();
    let deb_file = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    progress(&format!("unpacking {deb_file} ({})", mb(deb_size)));
    let (package, version) = deb_identity(deb)?;
    let contents = scan_deb(deb, true)?;
    let package_error = |detail: String| ImageError::Package {
        path: deb.to_path_buf(),
        detail,
    };
    let (vmlinuz_path, vmlinuz) = contents
        .vmlinuz
        .as_ref()
        .ok_or_else(|| package_error("it has no /boot/vmlinuz-*".into()))?;
    let release = contents
        .release
        .clone()
        .ok_or_else(|| package_error("cannot tell the kernel release".into()))?;
    let source = format!("{deb_file}:/{vmlinuz_path}");
    let v = vmlinux::extract(vmlinuz).map_err(|detail| ImageError::Vmlinux {
        path: source.clone(),
        detail,
    })?;
    progress(&format!(
        "extracting vmlinux ({:.0} MB {} → {:.0} MB)",
        v.compressed_len as f64 / 1e6,
        v.compression.name(),
        v.elf.len() as f64 / 1e6
    ));
    match vmlinux::has_pvh_note(&v.elf) {
        Ok(true) => {}
        Ok(false) => return Err(ImageError::NoPvhNote { path: source }),
        Err(detail) => {
            return Err(ImageError::Vmlinux {
                path: source,
                detail,
            })
        }
    }
    cache::write_file(&tmp.path().join("vmlinux"), &v.elf)?;
    if let Some(config) = &contents.config {
        cache::write_file(&tmp.path().join("config"), config)?;
    }
    let resolved = resolve_modules(&contents, wanted, &format!("{package}={version}"))?;
    let mod_dir = tmp.path().join(MODULES);
    cache::create_dir_all(&mod_dir)?;
    let mut index = Index {
        builtin: contents.builtin.clone(),
        ..Index::default()
    };
    for m in &resolved {
        cache::write_file(
            &mod_dir.join(format!("{}.ko", m.module.name)),
            &m.module.bytes,
        )?;
        index.deps.insert(m.module.name.clone(), m.deps.clone());
    }
    index.write(tmp.path())?;

    let record = KernelRecord {
        source: origin.source,
        package,
        version,
        release,
        deb: deb_file,
        deb_size,
        deb_blake3: deb_blake3.to_string(),
        deb_sha256: origin.deb_sha256,
        fetched: cache::utc_now(),
        vmlinux_size: v.elf.len() as u64,
        vmlinuz_compression: v.compression.name().to_string(),
    };
    record.write_in(tmp.path())?;
    tmp.persist(dest)?;
    Kernel::load(dest)?.ok_or_else(|| ImageError::Record {
        path: dest.join(KernelRecord::FILE),
        detail: "missing right after it was written".into(),
    })
}

struct Resolved {
    module: Module,
    deps: Vec<String>,
}

/// The modules `wanted` needs from the package, in load order, uncompressed.
fn resolve_modules(
    contents: &DebContents,
    wanted: &[String],
    package: &str,
) -> Result<Vec<Resolved>, ImageError> {
    let mut seen: HashMap<String, (Vec<u8>, Vec<String>)> = HashMap::new();
    let order = modules::load_order(wanted, &contents.builtin, &mut |name| {
        let Some((path, raw)) = contents.modules.get(name) else {
            return Ok(None);
        };
        let bytes = uncompressed_module(path, raw)?;
        let deps = modules::depends_of_ko(&bytes)?;
        seen.insert(name.to_string(), (bytes, deps.clone()));
        Ok(Some(deps))
    })
    .map_err(|e| resolve_error(e, package))?;
    Ok(order
        .into_iter()
        .filter_map(|name| {
            let (bytes, deps) = seen.remove(&name)?;
            Some(Resolved {
                module: Module { name, bytes },
                deps,
            })
        })
        .collect())
}

/// Newer kernels ship compressed modules; the image holds them uncompressed so
/// that a plain `finit_module` loads them.
fn uncompressed_module(path: &str, raw: &[u8]) -> Result<Vec<u8>, String> {
    if path.ends_with(".ko.xz") {
        vmlinux::run_filter("xz", &["-dc"], "xz-utils", raw)
    } else if path.ends_with(".ko.zst") {
        vmlinux::run_filter("zstd", &["-dcq"], "zstd", raw)
    } else if path.ends_with(".ko.gz") {
        vmlinux::run_filter("gzip", &["-dc"], "gzip", raw)
    } else {
        Ok(raw.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names() {
        assert_eq!(
            dir_name("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"),
            "linux-image-6.1.0-56-cloud-amd64_6.1.192-2"
        );
        assert_eq!(dir_name("p", "1:2.0/x"), "p_1_2.0_x");
    }
}
