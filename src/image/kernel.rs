//! The guest kernel: Debian's cloud kernel, resolved and fetched with apt once,
//! then used from the cache without touching apt again (exact versions vanish from
//! the archive, so what was fetched is recorded in `kernel/current`).
//!
//! The package is read with `dpkg-deb --fsys-tarfile` streamed into the `tar`
//! crate: dpkg-deb is present wherever `apt-get download` is (a Debian host is
//! required to fetch anyway), it handles every compression dpkg supports, and its
//! C xz decoder unpacks the 108 MB tar in about a second. Streaming keeps only
//! what the image needs (vmlinuz, config, the wanted modules) instead of writing
//! the 91 MB module tree to disk as `dpkg-deb -x` would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cache::{self, Record, TempDir};
use super::modules::{self, ResolveError};
use super::{vmlinux, GuestError, Module};

/// Names a local `.deb` to take the kernel from instead of apt.
pub(crate) const KERNEL_DEB_ENV: &str = "PROVIUM_KERNEL_DEB";

/// The meta package whose dependency is the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

const RECORD: &str = "record";
const CURRENT: &str = "current";
const MODULES: &str = "modules";
const MODULES_DEP: &str = "modules.dep";
const MODULES_BUILTIN: &str = "modules.builtin";

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
    /// Reads `<dir>/record`; `Ok(None)` if there is no such kernel.
    fn load(dir: &Path) -> Result<Option<Kernel>, GuestError> {
        let path = dir.join(RECORD);
        let Some(r) = Record::read(&path)? else {
            return Ok(None);
        };
        Ok(Some(Kernel {
            dir: dir.to_path_buf(),
            package: r.require("package", &path)?,
            version: r.require("version", &path)?,
            release: r.require("release", &path)?,
            deb_file: r.require("deb", &path)?,
            deb_blake3: r.require("deb_blake3", &path)?,
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
    ) -> Result<Option<Vec<Module>>, GuestError> {
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
                Err(e) => return Err(GuestError::io("read", &path, e)),
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
    ) -> Result<Vec<Module>, GuestError> {
        if let Some(mods) = self.cached_modules(wanted)? {
            return Ok(mods);
        }
        let deb = self.deb();
        if !deb.is_file() {
            return Err(GuestError::Package {
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
            cache::write_atomic(&dir.join(format!("{}.ko", m.module.name)), &m.module.bytes)?;
            index.deps.insert(m.module.name.clone(), m.deps.clone());
        }
        index.builtin.extend(contents.builtin);
        index.write(&self.dir)?;
        Ok(resolved.into_iter().map(|m| m.module).collect())
    }
}

/// `modules.dep` and `modules.builtin` of a kernel directory.
#[derive(Debug, Default)]
struct Index {
    deps: BTreeMap<String, Vec<String>>,
    builtin: HashSet<String>,
}

impl Index {
    fn read(dir: &Path) -> Result<Index, GuestError> {
        let read = |name: &str| -> Result<String, GuestError> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(GuestError::io("read", &path, e)),
            }
        };
        let mut index = Index::default();
        for line in read(MODULES_DEP)?.lines() {
            if let Some((name, deps)) = line.split_once(':') {
                index.deps.insert(
                    name.trim().to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                );
            }
        }
        index.builtin = read(MODULES_BUILTIN)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Ok(index)
    }

    fn write(&self, dir: &Path) -> Result<(), GuestError> {
        let mut dep = String::new();
        for (name, deps) in &self.deps {
            dep.push_str(name);
            dep.push(':');
            for d in deps {
                dep.push(' ');
                dep.push_str(d);
            }
            dep.push('\n');
        }
        let mut builtin: Vec<&String> = self.builtin.iter().collect();
        builtin.sort();
        let builtin: String = builtin.into_iter().map(|n| format!("{n}\n")).collect();
        cache::write_atomic(&dir.join(MODULES_BUILTIN), builtin.as_bytes())?;
        cache::write_atomic(&dir.join(MODULES_DEP), dep.as_bytes())
    }
}

fn resolve_error(e: ResolveError, package: &str) -> GuestError {
    match e {
        ResolveError::Missing(module) => GuestError::ModuleMissing {
            module,
            package: package.to_string(),
        },
        ResolveError::Cycle(cycle) => GuestError::ModuleCycle {
            package: package.to_string(),
            cycle: cycle.join(" -> "),
        },
        ResolveError::Unreadable(module, detail) => GuestError::Modinfo { module, detail },
    }
}

/// The kernel a cache lookup without the lock may use: the one named by
/// `PROVIUM_KERNEL_DEB` if that is set, else the one recorded in `current`.
pub(crate) fn cached(cache: &Path, local_deb: Option<&Path>) -> Result<Option<Kernel>, GuestError> {
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

/// The kernel recorded in `kernel/current`, if it is still in the cache.
pub(crate) fn recorded(cache: &Path) -> Result<Option<Kernel>, GuestError> {
    let current = cache.join("kernel").join(CURRENT);
    let Some(r) = Record::read(&current)? else {
        return Ok(None);
    };
    let dir = r.require("dir", &current)?;
    if dir.contains('/') || dir.starts_with('.') {
        return Err(GuestError::Record {
            path: current,
            detail: format!("bad dir={dir}"),
        });
    }
    Kernel::load(&cache.join("kernel").join(dir))
}

fn hash_file(path: &Path) -> Result<String, GuestError> {
    let mut f = fs::File::open(path).map_err(|e| GuestError::io("open", path, e))?;
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h).map_err(|e| GuestError::io("read", path, e))?;
    Ok(h.finalize().to_hex().to_string())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Takes the kernel from a local package (`PROVIUM_KERNEL_DEB`), caching it under
/// `kernel/local-<hash>/`; `kernel/current` is left alone.
pub(crate) fn from_local_deb(
    cache: &Path,
    deb: &Path,
    wanted: &[String],
    progress: &dyn Fn(&str),
) -> Result<Kernel, GuestError> {
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
    fs::copy(deb, &kept).map_err(|e| GuestError::io("copy", deb, e))?;
    let mut record = Record::default();
    record.set("source", &format!("file {}", deb.display()));
    install(tmp, &kept, &hash, record, &dest, wanted, progress)
}

/// Resolves the package behind `linux-image-cloud-amd64`, downloads it with
/// `apt-get download`, unpacks it into `kernel/<package>_<version>/` and records
/// it in `kernel/current` (call with the cache lock held).
pub(crate) fn fetch_from_apt(
    cache: &Path,
    wanted: &[String],
    progress: &dyn Fn(&str),
) -> Result<Kernel, GuestError> {
    progress(&format!("resolving {META_PACKAGE} …"));
    let meta = apt_show(META_PACKAGE)?;
    let depends = meta.get("Depends").map(String::as_str).unwrap_or("");
    let (package, pinned) = kernel_dependency(depends).ok_or_else(|| GuestError::Resolve {
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
        .ok_or_else(|| GuestError::Resolve {
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
        return Err(GuestError::Package {
            path: deb,
            detail: format!("it is {got_package}={got_version}, not {package}={version}"),
        });
    }
    let hash = hash_file(&deb)?;
    let mut record = Record::default();
    record.set("source", &format!("apt {META_PACKAGE}"));
    if let Some(sha) = info.get("SHA256") {
        // Checked by apt-get against the archive's signed index while downloading.
        record.set("deb_sha256", sha);
    }
    let dest = kernel_dir.join(dir_name(&package, &version));
    let kernel = install(tmp, &deb, &hash, record, &dest, wanted, progress)?;
    let mut current = Record::read(&dest.join(RECORD))?.unwrap_or_default();
    current.set("dir", &dir_name(&package, &version));
    cache::write_atomic(&kernel_dir.join(CURRENT), current.to_text().as_bytes())?;
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

/// Unpacks `deb` (inside `tmp`) into `tmp`, writes the record and renames `tmp`
/// to `dest`.
fn install(
    tmp: TempDir,
    deb: &Path,
    deb_blake3: &str,
    mut record: Record,
    dest: &Path,
    wanted: &[String],
    progress: &dyn Fn(&str),
) -> Result<Kernel, GuestError> {
    let deb_size = fs::metadata(deb)
        .map_err(|e| GuestError::io("stat", deb, e))?
        .len();
    let deb_file = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    progress(&format!("unpacking {deb_file} ({})", mb(deb_size)));
    let (package, version) = deb_identity(deb)?;
    let contents = scan_deb(deb, true)?;
    let package_error = |detail: String| GuestError::Package {
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
    let v = vmlinux::extract(vmlinuz).map_err(|detail| GuestError::Vmlinux {
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
        Ok(false) => return Err(GuestError::NoPvhNote { path: source }),
        Err(detail) => {
            return Err(GuestError::Vmlinux {
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

    record.set("package", &package);
    record.set("version", &version);
    record.set("release", &release);
    record.set("deb", &deb_file);
    record.set("deb_size", &deb_size.to_string());
    record.set("deb_blake3", deb_blake3);
    record.set("fetched", &cache::utc_now());
    record.set("vmlinux_size", &v.elf.len().to_string());
    record.set("vmlinuz_compression", v.compression.name());
    cache::write_file(&tmp.path().join(RECORD), record.to_text().as_bytes())?;
    tmp.persist(dest)?;
    Kernel::load(dest)?.ok_or_else(|| GuestError::Record {
        path: dest.join(RECORD),
        detail: "missing right after it was written".into(),
    })
}

/// What the image needs from a kernel package.
#[derive(Debug, Default)]
struct DebContents {
    release: Option<String>,
    /// Path inside the package, and content.
    vmlinuz: Option<(String, Vec<u8>)>,
    config: Option<Vec<u8>>,
    builtin: HashSet<String>,
    /// Module name -> (path inside the package, file content as shipped).
    modules: HashMap<String, (String, Vec<u8>)>,
}

/// Reads the package's file system tree, keeping what [`DebContents`] holds.
fn scan_deb(deb: &Path, want_kernel: bool) -> Result<DebContents, GuestError> {
    let command = format!("dpkg-deb --fsys-tarfile {}", deb.display());
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| GuestError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let scanned = match child.stdout.take() {
        Some(stdout) => read_tar(stdout, want_kernel),
        None => Err(io::Error::other("no stdout pipe")),
    };
    let status = child.wait();
    let stderr = err_thread.join().unwrap_or_default();
    let failed = |detail: String| GuestError::Command {
        command: command.clone(),
        detail,
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(failed(format!("{s}: {}", stderr.trim()))),
        Err(e) => return Err(failed(e.to_string())),
    }
    scanned.map_err(|e| failed(format!("reading its tar stream: {e} {}", stderr.trim())))
}

fn read_tar(stream: impl Read, want_kernel: bool) -> io::Result<DebContents> {
    let mut out = DebContents::default();
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw_path = entry.path()?.to_string_lossy().into_owned();
        let path = raw_path.trim_start_matches("./").trim_start_matches('/');
        // Merged-/usr packages ship usr/lib/modules.
        let lib_path = path.strip_prefix("usr/").unwrap_or(path);
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let read_all = |entry: &mut tar::Entry<_>| -> io::Result<Vec<u8>> {
            let mut data = Vec::with_capacity(entry.header().size().unwrap_or(0) as usize);
            entry.read_to_end(&mut data)?;
            Ok(data)
        };
        if let Some(release) = path.strip_prefix("boot/vmlinuz-") {
            if want_kernel {
                out.release = Some(release.to_string());
                out.vmlinuz = Some((path.to_string(), read_all(&mut entry)?));
            }
        } else if path.starts_with("boot/config-") {
            if want_kernel {
                out.config = Some(read_all(&mut entry)?);
            }
        } else if let Some(rest) = lib_path.strip_prefix("lib/modules/") {
            let release = rest.split('/').next().unwrap_or_default();
            if out.release.is_none() && !release.is_empty() {
                out.release = Some(release.to_string());
            }
            if file_name == "modules.builtin" {
                let text = read_all(&mut entry)?;
                out.builtin = String::from_utf8_lossy(&text)
                    .lines()
                    .filter_map(|l| modules::name_from_file(l.rsplit('/').next().unwrap_or(l)))
                    .collect();
            } else if let Some(name) = modules::name_from_file(file_name) {
                let data = read_all(&mut entry)?;
                out.modules.insert(name, (path.to_string(), data));
            }
        }
    }
    Ok(out)
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
) -> Result<Vec<Resolved>, GuestError> {
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

/// `Package` and `Version` of a `.deb`, from `dpkg-deb -f`.
fn deb_identity(deb: &Path) -> Result<(String, String), GuestError> {
    let out = run_captured(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .args(["Package", "Version"]),
        &format!("dpkg-deb -f {} Package Version", deb.display()),
    )?;
    let fields = parse_control(&out);
    match (fields.get("Package"), fields.get("Version")) {
        (Some(p), Some(v)) => Ok((p.clone(), v.clone())),
        _ => Err(GuestError::Package {
            path: deb.to_path_buf(),
            detail: "dpkg-deb -f printed no Package/Version".into(),
        }),
    }
}

/// Runs a command with `LC_ALL=C` and returns its stdout, or an error naming it.
fn run_captured(cmd: &mut Command, display: &str) -> Result<String, GuestError> {
    let out = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| GuestError::Spawn {
            command: display.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(GuestError::Command {
            command: display.to_string(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The fields of the first stanza of Debian control data (`Key: value`, with
/// continuation lines starting with a space).
fn parse_control(text: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                let v: &mut String = v;
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    fields
}

/// `apt-cache show` of one package (the candidate version, or `name=version`).
fn apt_show(spec: &str) -> Result<HashMap<String, String>, GuestError> {
    let display = format!("apt-cache show --no-all-versions {spec}");
    let out = run_captured(
        Command::new("apt-cache").args(["show", "--no-all-versions", spec]),
        &display,
    )
    .map_err(|e| match e {
        GuestError::Command { detail, .. } => GuestError::Resolve {
            package: spec.to_string(),
            detail: format!("{detail} (are the package lists current? run apt-get update)"),
        },
        other => other,
    })?;
    let fields = parse_control(&out);
    if fields.is_empty() {
        return Err(GuestError::Resolve {
            package: spec.to_string(),
            detail: "apt-cache knows no such package (run apt-get update)".into(),
        });
    }
    Ok(fields)
}

/// The kernel package a meta package depends on: the first `linux-image-*`
/// alternative of its `Depends`, with the version it pins (`(= 6.1.192-2)`).
fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
    for alternative in depends.split([',', '|']) {
        let alternative = alternative.trim();
        let (name, constraint) = match alternative.split_once('(') {
            Some((n, c)) => (n.trim(), Some(c.trim_end_matches(')').trim())),
            None => (alternative, None),
        };
        let name = name.split(':').next().unwrap_or(name);
        if !name.starts_with("linux-image-") {
            continue;
        }
        let version = constraint
            .and_then(|c| c.strip_prefix('='))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        return Some((name.to_string(), version));
    }
    None
}

/// `apt-get download package=version` into `dir`, reporting apt's own lines and
/// the bytes received so far (from the size of the file being written), every
/// 10 %. Returns the downloaded `.deb`.
fn apt_download(
    package: &str,
    version: &str,
    dir: &Path,
    expected: Option<u64>,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, GuestError> {
    let spec = format!("{package}={version}");
    let display = format!("apt-get download {spec}");
    let mut child = Command::new("apt-get")
        .args(["download", &spec])
        .current_dir(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| GuestError::Spawn {
            command: display.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let started = Instant::now();
    let mut reported_decile = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    progress(&format!("apt: {}", line.trim()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(total) = expected.filter(|t| *t > 0) {
            let have = dir_bytes(dir);
            let decile = (have.saturating_mul(10) / total).min(10);
            if decile > reported_decile && decile < 10 {
                reported_decile = decile;
                progress(&format!(
                    "downloading {package}: {} of {} ({}%)",
                    mb(have),
                    mb(total),
                    have.saturating_mul(100) / total
                ));
            }
        }
    }
    let _ = out_thread.join();
    let status = child.wait();
    let stderr = err_thread.join().unwrap_or_default();
    let failed = |detail: String| GuestError::Command {
        command: display.clone(),
        detail,
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(failed(format!("{s}: {}", stderr.trim()))),
        Err(e) => return Err(failed(e.to_string())),
    }
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| GuestError::io("list", dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [deb] = debs.as_slice() else {
        return Err(failed(format!(
            "expected one .deb in {}, found {}",
            dir.display(),
            debs.len()
        )));
    };
    let size = fs::metadata(deb).map(|m| m.len()).unwrap_or(0);
    progress(&format!(
        "downloaded {} in {:.1} s",
        mb(size),
        started.elapsed().as_secs_f64()
    ));
    Ok(deb.clone())
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_package_dependency() {
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".into(),
                Some("6.1.192-2".into())
            ))
        );
        assert_eq!(
            kernel_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-cloud-amd64:amd64"
            ),
            Some(("linux-image-6.12.9-cloud-amd64".into(), None))
        );
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-56-cloud-amd64 (>= 6.1)"),
            Some(("linux-image-6.1.0-56-cloud-amd64".into(), None))
        );
        assert_eq!(kernel_dependency("kmod, linux-base"), None);
        assert_eq!(kernel_dependency(""), None);
    }

    #[test]
    fn control_stanza() {
        let text = "\nPackage: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDescription: Linux\n for cloud\n multi-line\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n\nPackage: other\n";
        let f = parse_control(text);
        assert_eq!(f["Package"], "linux-image-cloud-amd64");
        assert_eq!(f["Version"], "6.1.192-2");
        assert_eq!(f["Description"], "Linux\nfor cloud\nmulti-line");
        assert_eq!(
            f["Depends"],
            "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
        );
    }

    #[test]
    fn directory_names() {
        assert_eq!(
            dir_name("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"),
            "linux-image-6.1.0-56-cloud-amd64_6.1.192-2"
        );
        assert_eq!(dir_name("p", "1:2.0/x"), "p_1_2.0_x");
    }

    #[test]
    fn tar_scan_keeps_what_the_image_needs() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            builder.append_data(&mut h, path, data).expect("append");
        };
        add("./boot/vmlinuz-6.1.0-9-cloud-amd64", b"bzImage");
        add("./boot/config-6.1.0-9-cloud-amd64", b"CONFIG_PVH=y\n");
        add("./boot/System.map-6.1.0-9-cloud-amd64", b"placeholder");
        add(
            "./lib/modules/6.1.0-9-cloud-amd64/modules.builtin",
            b"kernel/drivers/virtio/virtio-foo.ko\n",
        );
        add(
            "./lib/modules/6.1.0-9-cloud-amd64/kernel/net/vsock.ko",
            b"ko",
        );
        add(
            "./usr/lib/modules/6.1.0-9-cloud-amd64/kernel/x/virtio-rng.ko.xz",
            b"xz",
        );
        add("./usr/share/doc/linux/changelog.gz", b"doc");
        let tar = builder.into_inner().expect("tar");
        let c = read_tar(tar.as_slice(), true).expect("scan");
        assert_eq!(c.release.as_deref(), Some("6.1.0-9-cloud-amd64"));
        assert_eq!(
            c.vmlinuz.as_ref().map(|(_, d)| d.as_slice()),
            Some(&b"bzImage"[..])
        );
        assert_eq!(c.config.as_deref(), Some(&b"CONFIG_PVH=y\n"[..]));
        assert!(c.builtin.contains("virtio_foo"));
        assert_eq!(c.modules.len(), 2);
        assert_eq!(c.modules["vsock"].1, b"ko");
        assert!(c.modules["virtio_rng"].0.ends_with(".ko.xz"));
        let c = read_tar(tar.as_slice(), false).expect("scan");
        assert!(c.vmlinuz.is_none() && c.config.is_none());
        assert_eq!(c.modules.len(), 2);
    }
}
