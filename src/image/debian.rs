//! Debian packages: resolving a package with `apt-cache`, downloading it with
//! `apt-get download`, and reading a `.deb` (its identity, and the files a
//! kernel image needs from its file system tree).
//!
//! The package is read with `dpkg-deb --fsys-tarfile` streamed into the `tar`
//! crate: dpkg-deb is present wherever `apt-get download` is (a Debian host is
//! required to fetch anyway), it handles every compression dpkg supports, and its
//! C xz decoder unpacks the 108 MB tar in about a second. Streaming keeps only
//! what the image needs (vmlinuz, config, the wanted modules) instead of writing
//! the 91 MB module tree to disk as `dpkg-deb -x` would.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::ImageError;
use super::modules;

/// A byte count in megabytes, for progress lines.
pub(super) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// What the image needs from a kernel package.
#[derive(Debug, Default)]
pub(super) struct DebContents {
    pub(super) release: Option<String>,
    /// Path inside the package, and content.
    pub(super) vmlinuz: Option<(String, Vec<u8>)>,
    pub(super) config: Option<Vec<u8>>,
    pub(super) builtin: HashSet<String>,
    /// Module name -> (path inside the package, file content as shipped).
    pub(super) modules: HashMap<String, (String, Vec<u8>)>,
}

/// Reads the package's file system tree, keeping what [`DebContents`] holds.
pub(super) fn scan_deb(deb: &Path, want_kernel: bool) -> Result<DebContents, ImageError> {
    let command = format!("dpkg-deb --fsys-tarfile {}", deb.display());
    let (mut child, err_thread) = spawn_piped(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb),
        &command,
    )?;
    let scanned = match child.stdout.take() {
        Some(stdout) => read_tar(stdout, want_kernel),
        None => Err(io::Error::other("no stdout pipe")),
    };
    let status = child.wait();
    let stderr = err_thread.join().unwrap_or_default();
    check_exit(&command, status, &stderr)?;
    scanned.map_err(|e| ImageError::Command {
        command,
        detail: format!("reading its tar stream: {e} {}", stderr.trim()),
    })
}

/// Spawns `cmd` (named `display` in errors) with stdout piped to the caller
/// and stderr collected by a thread, whose result is the text it printed.
fn spawn_piped(
    cmd: &mut Command,
    display: &str,
) -> Result<(Child, JoinHandle<String>), ImageError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ImageError::Spawn {
            command: display.to_string(),
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
    Ok((child, err_thread))
}

/// Fails naming `command` and what it printed on stderr unless it exited 0.
fn check_exit(
    command: &str,
    status: io::Result<ExitStatus>,
    stderr: &str,
) -> Result<(), ImageError> {
    let detail = match status {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => format!("{s}: {}", stderr.trim()),
        Err(e) => e.to_string(),
    };
    Err(ImageError::Command {
        command: command.to_string(),
        detail,
    })
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

/// `Package` and `Version` of a `.deb`, from `dpkg-deb -f`.
pub(super) fn deb_identity(deb: &Path) -> Result<(String, String), ImageError> {
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
        _ => Err(ImageError::Package {
            path: deb.to_path_buf(),
            detail: "dpkg-deb -f printed no Package/Version".into(),
        }),
    }
}

/// Runs a command with `LC_ALL=C` and returns its stdout, or an error naming it.
fn run_captured(cmd: &mut Command, display: &str) -> Result<String, ImageError> {
    let out = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ImageError::Spawn {
            command: display.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(ImageError::Command {
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
pub(super) fn apt_show(spec: &str) -> Result<HashMap<String, String>, ImageError> {
    let display = format!("apt-cache show --no-all-versions {spec}");
    let out = run_captured(
        Command::new("apt-cache").args(["show", "--no-all-versions", spec]),
        &display,
    )
    .map_err(|e| match e {
        ImageError::Command { detail, .. } => ImageError::Resolve {
            package: spec.to_string(),
            detail: format!("{detail} (are the package lists current? run apt-get update)"),
        },
        other => other,
    })?;
    let fields = parse_control(&out);
    if fields.is_empty() {
        return Err(ImageError::Resolve {
            package: spec.to_string(),
            detail: "apt-cache knows no such package (run apt-get update)".into(),
        });
    }
    Ok(fields)
}

/// The kernel package a meta package depends on: the first `linux-image-*`
/// alternative of its `Depends`, with the version it pins (`(= 6.1.192-2)`).
pub(super) fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
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
pub(super) fn apt_download(
    package: &str,
    version: &str,
    dir: &Path,
    expected: Option<u64>,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, ImageError> {
    let spec = format!("{package}={version}");
    let display = format!("apt-get download {spec}");
    let (mut child, err_thread) = spawn_piped(
        Command::new("apt-get")
            .args(["download", &spec])
            .current_dir(dir)
            .env("LC_ALL", "C"),
        &display,
    )?;
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
    check_exit(&display, status, &stderr)?;
    let failed = |detail: String| ImageError::Command {
        command: display.clone(),
        detail,
    };
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| ImageError::io("list", dir, e))?
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
