//! Tests of the whole builder: a hermetic one over a fake kernel in a temporary
//! cache, and two `#[ignore]`d ones that fetch the real kernel and boot it.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;
use crate::metadata::MetadataFile;

fn temp_cache(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "provium-guest-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn host_busybox() -> Option<PathBuf> {
    let p = PathBuf::from(BUSYBOX);
    matches!(vmlinux::elf_interpreter(&fs::read(&p).ok()?), Ok(false)).then_some(p)
}

/// The record of the fake kernel, as the `key=value` lines earlier versions
/// wrote (all fields, sorted); `current` held the same and `dir`.
const LEGACY_RECORD: &str = "\
deb=linux-image-test_1.0_amd64.deb
deb_blake3=00112233445566778899
deb_size=1234
fetched=2026-01-01T00:00:00Z
package=linux-image-test
release=1.0-test
source=apt linux-image-cloud-amd64
version=1.0
vmlinux_size=24
vmlinuz_compression=LZ4
";

/// A kernel directory as `fetch_from_apt` leaves it, with made-up content;
/// its record and `current` in the legacy text format if `legacy`.
fn fake_kernel_as(cache: &Path, legacy: bool) {
    let dir = cache.join("kernel").join("linux-image-test_1.0");
    fs::create_dir_all(dir.join("modules")).expect("mkdir");
    fs::write(dir.join("vmlinux"), b"\x7fELF not really a kernel").expect("vmlinux");
    fs::write(dir.join("modules/a.ko"), b"module a").expect("a");
    fs::write(dir.join("modules/b.ko"), b"module b").expect("b");
    fs::write(dir.join("modules.dep"), "a:\nb: a\n").expect("dep");
    fs::write(dir.join("modules.builtin"), "virtio\n").expect("builtin");
    if legacy {
        fs::write(dir.join("record"), LEGACY_RECORD).expect("record");
        let current = LEGACY_RECORD.replace("fetched=", "dir=linux-image-test_1.0\nfetched=");
        fs::write(cache.join("kernel").join("current"), current).expect("current");
        return;
    }
    let record = records::KernelRecord::parse_legacy(LEGACY_RECORD).expect("record");
    record.write_in(&dir).expect("record");
    let current = records::CurrentKernel {
        dir: "linux-image-test_1.0".into(),
    };
    current.write_in(&cache.join("kernel")).expect("current");
}

fn fake_kernel(cache: &Path) {
    fake_kernel_as(cache, false);
}

/// `manifest` as the `key=value` lines of `manifest.txt` in earlier versions.
fn legacy_manifest(m: &records::ImageManifest) -> String {
    let mut fields = [
        ("built", m.built.clone()),
        ("busybox_blake3", m.busybox_blake3.clone()),
        ("format", m.format.clone()),
        ("init_blake3", m.init_blake3.clone()),
        ("initrd_size", m.initrd_size.to_string()),
        ("kernel_deb_blake3", m.kernel_deb_blake3.clone()),
        ("kernel_dir", m.kernel_dir.clone()),
        ("kernel_package", m.kernel_package.clone()),
        ("kernel_release", m.kernel_release.clone()),
        ("key", m.key.clone()),
        ("modules", m.modules.join(" ")),
        ("vmlinux_size", m.vmlinux_size.to_string()),
    ];
    fields.sort();
    fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn spec(cache: &Path, busybox: &Path, modules: &[&str]) -> ImageSpec {
    ImageSpec {
        cache: cache.to_path_buf(),
        kernel_deb: None,
        modules: modules.iter().map(|s| s.to_string()).collect(),
        busybox: busybox.to_path_buf(),
    }
}

#[test]
fn cached_build_reuse_and_rebuild() {
    let Some(busybox) = host_busybox() else {
        eprintln!("skipped: no static {BUSYBOX}");
        return;
    };
    let agent = fs::read(&busybox).expect("agent stand-in");
    let cache = temp_cache("hermetic");
    fake_kernel(&cache);
    let s = spec(&cache, &busybox, &["b", "virtio"]);
    let lines = RefCell::new(Vec::<String>::new());
    let progress = |l: &str| lines.borrow_mut().push(l.to_string());

    let first = build_image(&s, &Init::Agent(&agent), &progress).expect("build");
    assert_eq!(first.kernel_release, "1.0-test");
    assert_eq!(first.kernel_package, "linux-image-test=1.0");
    assert_eq!(first.key.len(), 64);
    assert_eq!(
        first.initrd,
        cache.join("images").join(&first.key).join("initrd.cpio")
    );
    assert_eq!(
        fs::read(&first.kernel).expect("vmlinux"),
        b"\x7fELF not really a kernel"
    );
    let out = lines.borrow().join("\n");
    assert!(out.contains("building initramfs ("), "{out}");
    assert!(out.contains("guest image ready: "), "{out}");
    let dir = image_dir(&first);
    let manifest = records::ImageManifest::read_in(&dir).expect("manifest");
    assert_eq!(
        manifest.map(|m| m.modules),
        Some(vec!["a".into(), "b".into()])
    );

    // Unchanged inputs: same image, nothing reported, fast.
    lines.borrow_mut().clear();
    let t = Instant::now();
    let again = build_image(&s, &Init::Agent(&agent), &progress).expect("cached");
    let took = t.elapsed();
    assert_eq!(again, first);
    assert!(lines.borrow().is_empty(), "{:?}", lines.borrow());
    eprintln!("cached lookup took {took:?}");

    // Another agent: another key; the old entry stays.
    let mut other = agent.clone();
    other.extend_from_slice(b"trailing bytes");
    let second = build_image(&s, &Init::Agent(&other), &progress).expect("rebuild");
    assert_ne!(second.key, first.key);
    assert!(first.initrd.is_file());

    // A truncated initrd (a crash without fsync) is noticed and rebuilt.
    fs::write(&first.initrd, b"").expect("truncate");
    let repaired = build_image(&s, &Init::Agent(&agent), &progress).expect("repair");
    assert_eq!(repaired.key, first.key);
    assert!(fs::metadata(&repaired.initrd).expect("initrd").len() > 1000);

    // A module the kernel lacks, with no package kept to take it from.
    let err = build_image(
        &spec(&cache, &busybox, &["zzz"]),
        &Init::Agent(&agent),
        &progress,
    )
    .expect_err("no such module");
    assert!(
        err.to_string().contains("linux-image-test_1.0_amd64.deb"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&cache);
}

/// A cache made by a version that wrote `key=value` metadata is used as it
/// is: its kernel is not fetched again, its images are not built again,
/// and its files are rewritten as JSON (the old ones stay).
#[test]
fn legacy_cache_is_used_and_migrated() {
    let Some(busybox) = host_busybox() else {
        eprintln!("skipped: no static {BUSYBOX}");
        return;
    };
    let agent = fs::read(&busybox).expect("agent stand-in");
    // The same kernel and inputs with JSON metadata give the key to expect.
    let reference = temp_cache("legacy-reference");
    fake_kernel(&reference);
    let want = build_image(
        &spec(&reference, &busybox, &["b"]),
        &Init::Agent(&agent),
        &|_| {},
    )
    .expect("reference build")
    .key;
    let _ = fs::remove_dir_all(&reference);

    let cache = temp_cache("legacy");
    fake_kernel_as(&cache, true);
    let s = spec(&cache, &busybox, &["b"]);
    let lines = RefCell::new(Vec::<String>::new());
    let progress = |l: &str| lines.borrow_mut().push(l.to_string());
    let first = build_image(&s, &Init::Agent(&agent), &progress).expect("build");
    assert_eq!(first.key, want, "keys do not depend on the metadata format");
    let out = lines.borrow().join("\n");
    assert!(
        !out.contains("downloading") && !out.contains("resolving"),
        "{out}"
    );
    let kernel_dir = cache.join("kernel/linux-image-test_1.0");
    for (dir, json, legacy) in [
        (&cache.join("kernel"), "current.json", "current"),
        (&kernel_dir, "record.json", "record"),
    ] {
        assert!(dir.join(json).is_file(), "{json} written");
        assert!(dir.join(legacy).is_file(), "{legacy} kept");
    }
    let record = records::KernelRecord::read_in(&kernel_dir)
        .expect("record")
        .expect("present");
    assert_eq!(record.deb_size, 1234);
    assert_eq!(record.vmlinuz_compression, "LZ4");

    // Its image with a legacy manifest (and no JSON one) is found as is.
    let dir = image_dir(&first);
    let manifest = records::ImageManifest::read_in(&dir)
        .expect("manifest")
        .expect("present");
    fs::remove_file(dir.join("manifest.json")).expect("rm");
    fs::write(dir.join("manifest.txt"), legacy_manifest(&manifest)).expect("legacy");
    lines.borrow_mut().clear();
    let again = build_image(&s, &Init::Agent(&agent), &progress).expect("cached");
    assert_eq!(again, first);
    assert!(
        lines.borrow().is_empty(),
        "not rebuilt: {:?}",
        lines.borrow()
    );
    let migrated = records::ImageManifest::read_in(&dir).expect("manifest");
    assert_eq!(migrated, Some(manifest));
    assert!(dir.join("manifest.json").is_file());
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn concurrent_builders_agree() {
    let Some(busybox) = host_busybox() else {
        return;
    };
    let agent = fs::read(&busybox).expect("agent stand-in");
    let cache = temp_cache("concurrent");
    fake_kernel(&cache);
    let s = spec(&cache, &busybox, &["b"]);
    let images: Vec<GuestImage> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| build_image(&s, &Init::Agent(&agent), &|_| {})))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("build"))
            .collect()
    });
    assert!(images.windows(2).all(|w| w[0] == w[1]));
    let entries: Vec<_> = fs::read_dir(cache.join("images"))
        .expect("images")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries.len(), 1, "one entry, no leftovers: {entries:?}");
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn error_messages_name_what_failed() {
    let cache = temp_cache("errors");
    let missing = cache.join("no-busybox");
    let err = build_image(&spec(&cache, &missing, &[]), &Init::Script(b"x"), &|_| {})
        .expect_err("no busybox");
    assert_eq!(
        err.to_string(),
        format!(
            "busybox-static is not installed (expected a static {}); run scripts/setup",
            missing.display()
        )
    );
    let err = build_image(
        &spec(&cache, &missing, &[]),
        &Init::Agent(b"#!/bin/sh\n"),
        &|_| {},
    )
    .expect_err("script agent");
    assert!(
        err.to_string()
            .starts_with("the agent binary is not a static ELF executable: "),
        "{err}"
    );
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn cache_dir_follows_xdg() {
    // Only reads the environment: the variables are not changed here.
    let dir = cache_dir();
    assert!(dir.ends_with("provium") || dir.ends_with("provium-cache"));
    assert!(dir.is_absolute());
}

/// The real thing: resolves and downloads the cloud kernel with apt into a fresh
/// cache (or `PROVIUM_TEST_CACHE`), builds the image, then looks it up again.
/// `cargo test --lib image::tests::real -- --ignored --nocapture`
#[test]
#[ignore = "needs apt, network access to the Debian archive and busybox-static"]
fn real_default_image() {
    let cache = match std::env::var_os("PROVIUM_TEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => temp_cache("real"),
    };
    let agent = fs::read(BUSYBOX).expect("busybox-static as a stand-in agent");
    let s = ImageSpec {
        cache: cache.clone(),
        kernel_deb: std::env::var_os(kernel::KERNEL_DEB_ENV).map(PathBuf::from),
        modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
        busybox: PathBuf::from(BUSYBOX),
    };
    let t0 = Instant::now();
    let progress = |l: &str| eprintln!("[{:>7.3} s] {l}", t0.elapsed().as_secs_f64());
    let image = build_image(&s, &Init::Agent(&agent), &progress).expect("default image");
    let cold = t0.elapsed();
    let t1 = Instant::now();
    let again = build_image(&s, &Init::Agent(&agent), &progress).expect("cached image");
    let warm = t1.elapsed();
    assert_eq!(again, image);
    let elf = fs::read(&image.kernel).expect("vmlinux");
    assert_eq!(vmlinux::has_pvh_note(&elf), Ok(true));
    let initrd = fs::read(&image.initrd).expect("initrd");
    let order = cpio_file(&initrd, "lib/modules/provium/order").expect("order file");
    let order = String::from_utf8_lossy(&order).into_owned();
    for m in DEFAULT_MODULES {
        assert!(
            order.lines().any(|l| l == format!("{m}.ko")),
            "{m} in {order}"
        );
    }
    eprintln!("image: {image:#?}");
    eprintln!("module order:\n{order}");
    eprintln!(
        "cold build {cold:?}, cached lookup {warm:?}; vmlinux {} bytes, initrd {} bytes",
        elf.len(),
        initrd.len()
    );
    let mut warm_runs: Vec<_> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let _ = build_image(&s, &Init::Agent(&agent), &|_| {});
            t.elapsed()
        })
        .collect();
    warm_runs.sort();
    eprintln!(
        "cached lookups: min {:?}, median {:?}",
        warm_runs[0], warm_runs[10]
    );

    // More modules later: taken from the kept package, without apt.
    let mut more = s;
    more.modules
        .extend(["virtio_blk".to_string(), "overlay".to_string()]);
    let t2 = Instant::now();
    let bigger = build_image(&more, &Init::Agent(&agent), &progress).expect("extra modules");
    eprintln!("image with extra modules built in {:?}", t2.elapsed());
    assert_eq!(bigger.kernel_package, image.kernel_package);
    let initrd = fs::read(&bigger.initrd).expect("initrd");
    let order = cpio_file(&initrd, "lib/modules/provium/order").expect("order file");
    let order = String::from_utf8_lossy(&order).into_owned();
    assert!(
        order.contains("virtio_blk.ko\n") && order.contains("overlay.ko\n"),
        "{order}"
    );
    let again = build_image(&more, &Init::Agent(&agent), &|_| {}).expect("cached");
    assert_eq!(again, bigger);
}

/// A file's content in a newc archive.
fn cpio_file(mut archive: &[u8], name: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    loop {
        let mut r = cpio::NewcReader::new(archive).ok()?;
        if r.entry().is_trailer() {
            return None;
        }
        if r.entry().name() == name {
            let mut data = Vec::new();
            r.read_to_end(&mut data).ok()?;
            return Some(data);
        }
        archive = r.finish().ok()?;
    }
}

/// Host TSC frequency in kHz (TCG's guest TSC runs at the host's rate; microvm has
/// no other clock to calibrate it against).
#[cfg(target_arch = "x86_64")]
fn tsc_khz() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let read = || unsafe { std::arch::x86_64::_rdtsc() };
    let (t, c) = (Instant::now(), read());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (dt, dc) = (t.elapsed(), read() - c);
    (dc as f64 / dt.as_secs_f64() / 1000.0) as u64
}

/// Boots the real kernel with a shell-script `/init` that loads the modules in the
/// order file and powers off. Uses the cache of `real_default_image` when
/// `PROVIUM_TEST_CACHE` is set, else the user's cache.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "needs the real kernel (apt) and qemu-system-x86_64"]
fn boot_check() {
    let cache = std::env::var_os("PROVIUM_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(cache_dir);
    let script = b"#!/bin/sh\n\
mount -t proc proc /proc\n\
mount -t sysfs sys /sys\n\
mount -t devtmpfs dev /dev\n\
echo \"modules: $(ls /lib/modules/provium | tr '\\n' ' ')\"\n\
for m in $(cat /lib/modules/provium/order); do\n\
  insmod /lib/modules/provium/$m || echo \"FAILED $m\"\n\
done\n\
echo \"loaded: $(cut -d' ' -f1 /proc/modules | tr '\\n' ' ')\"\n\
echo \"hostname: $(cat /etc/hostname) uptime: $(cat /proc/uptime)\"\n\
syslogd && logger provium-log-test && sleep 0.2 && tail -n1 /var/log/messages\n\
echo OK\n\
poweroff -f\n";
    let s = ImageSpec {
        cache,
        kernel_deb: std::env::var_os(kernel::KERNEL_DEB_ENV).map(PathBuf::from),
        modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
        busybox: PathBuf::from(BUSYBOX),
    };
    let image = build_image(&s, &Init::Script(script), &|l| eprintln!("{l}")).expect("image");
    let append = format!(
        "console=ttyS0 panic=-1 quiet cryptomgr.notests tsc_early_khz={}",
        tsc_khz()
    );
    let t = Instant::now();
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "qemu-system-x86_64",
            "-M",
            "microvm,accel=tcg",
            "-cpu",
            "qemu64",
        ])
        .args([
            "-m",
            "256M",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-kernel"])
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .arg("-append")
        .arg(&append)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run qemu");
    let console = String::from_utf8_lossy(&out.stdout);
    eprintln!("{console}\n(qemu {} after {:?})", out.status, t.elapsed());
    assert!(console.contains("\nOK"), "guest did not finish");
    assert!(!console.contains("FAILED"), "a module failed to load");
    assert!(console.contains("vmw_vsock_virtio_transport"));
    assert!(
        console.contains("provium-log-test"),
        "syslogd wrote /var/log/messages"
    );
}
