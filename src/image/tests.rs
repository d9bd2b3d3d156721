//! Tests of the whole builder: a hermetic one over a fake kernel in a temporary
//! cache, and two `#[ignore]`d ones that fetch the real kernel and boot it.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;

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

/// A kernel directory as `fetch_from_apt` leaves it, with made-up content.
fn fake_kernel(cache: &Path) {
    let dir = cache.join("kernel").join("linux-image-test_1.0");
    fs::create_dir_all(dir.join("modules")).expect("mkdir");
    fs::write(dir.join("vmlinux"), b"\x7fELF not really a kernel").expect("vmlinux");
    fs::write(dir.join("modules/a.ko"), b"module a").expect("a");
    fs::write(dir.join("modules/b.ko"), b"module b").expect("b");
    fs::write(dir.join("modules.dep"), "a:\nb: a\n").expect("dep");
    fs::write(dir.join("modules.builtin"), "virtio\n").expect("builtin");
    let record = "package=linux-image-test\nversion=1.0\nrelease=1.0-test\n\
                  deb=linux-image-test_1.0_amd64.deb\ndeb_blake3=00112233445566778899\n";
    fs::write(dir.join("record"), record).expect("record");
    fs::write(
        cache.join("kernel").join("current"),
        format!("{record}dir=linux-image-test_1.0\n"),
    )
    .expect("current");
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
    let manifest =
        fs::read_to_string(first.initrd.with_file_name("manifest.txt")).expect("manifest");
    assert!(manifest.contains("modules=a b\n"), "{manifest}");

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
