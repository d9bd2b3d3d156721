//! `provium doctor`: what this host offers guests, one check a line, with
//! the fix for what is missing.

use std::fmt;
use std::process::{Command, Stdio};
use std::time::Instant;

use provium::fixtures::remote::Remote;
use provium::fixtures::{self, Cache};
use provium::image;
use provium::image::agent::AGENT;
use provium::vm::accel::{self, Accel};
use provium::vm::host;
use provium::vm::rundir::RunDir;
use provium::vm::vsock::{self, VsockKind};
use provium::vm::{qemu, BootExtras};
use provium_protocol::{ExitStatus, Op, Reply, RunSpec};
use serde_bytes::ByteBuf;

use crate::boot::{Guest, GuestSpec};
use crate::cli::{DoctorArgs, VmArgs};
use crate::defaults::{self, exit};
use crate::fmt as human;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but degraded; the fix says how to do better.
    Warn,
    /// The default guest cannot boot; the fix says what to do.
    Fail,
    /// Does not apply to this host.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<5} {:<19} {}",
            self.status.label(),
            self.name,
            self.detail
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// The exit code for a report: 1 when a check failed.
pub fn exit_code(checks: &[Check]) -> i32 {
    if checks.iter().any(|c| c.status == Status::Fail) {
        exit::FAILURE
    } else {
        exit::SUCCESS
    }
}

/// Runs every check (and the boot with `--boot`), printing each line as it
/// is known; returns the exit code.
pub fn doctor(args: &DoctorArgs) -> i32 {
    let mut checks = Vec::new();
    let report = |checks: &mut Vec<Check>, c: Check| {
        println!("{c}");
        checks.push(c);
    };
    let vsock_kind = match vsock::detect_why() {
        Ok((kind, why)) => Some((kind, why)),
        Err(e) => {
            report(
                &mut checks,
                Check::new("vhost-vsock", Status::Fail, e.to_string())
                    .fix("unset PROVIUM_VSOCK, or set it to kernel or vhost-user"),
            );
            None
        }
    };
    report(&mut checks, accelerator());
    if let Some((kind, why)) = &vsock_kind {
        report(&mut checks, kernel_vsock(*kind, why));
        report(&mut checks, vsock_daemon(*kind));
        report(&mut checks, transport(*kind));
    }
    report(&mut checks, qemu_binary());
    report(&mut checks, run_directory());
    report(&mut checks, default_image());
    report(&mut checks, image_cache());
    report(&mut checks, fixture_cache());
    report(&mut checks, fixture_store());
    if args.boot {
        let boot = if exit_code(&checks) == exit::FAILURE {
            Check::new("boot", Status::Skip, "not tried: a check above failed")
        } else {
            boot_check()
        };
        report(&mut checks, boot);
    }
    exit_code(&checks)
}

fn accelerator() -> Check {
    match accel::detect_why() {
        Ok((Accel::Kvm, why)) => {
            Check::new("kvm", Status::Ok, format!("guests run under KVM: {why}"))
        }
        Ok((Accel::Tcg, why)) => Check::new(
            "kvm",
            Status::Warn,
            format!("not usable, guests run under TCG (slower): {why}"),
        )
        .fix(
            "a host with hardware virtualisation (vmx/svm), kvm_intel or kvm_amd loaded and \
             /dev/kvm readable and writable by this user",
        ),
        Err(e) => Check::new("kvm", Status::Fail, e.to_string())
            .fix("unset PROVIUM_ACCEL, or set it to kvm or tcg"),
    }
}

fn kernel_vsock(kind: VsockKind, why: &str) -> Check {
    match kind {
        VsockKind::Kernel => Check::new("vhost-vsock", Status::Ok, why),
        VsockKind::VhostUser => Check::new("vhost-vsock", Status::Warn, why).fix(
            "`modprobe vhost_vsock` and read-write /dev/vhost-vsock for vsock VMs that \
             snapshot (without it, VMs default to the serial transport)",
        ),
    }
}

fn vsock_daemon(kind: VsockKind) -> Check {
    const NAME: &str = "vhost-device-vsock";
    if kind == VsockKind::Kernel {
        return Check::new(
            NAME,
            Status::Skip,
            "not needed: kernel vhost-vsock serves vsock",
        );
    }
    match vsock::daemon_binary() {
        Ok(path) => Check::new(
            NAME,
            Status::Ok,
            format!("{} (serves transport = vsock VMs)", path.display()),
        ),
        Err(e) => Check::new(
            NAME,
            Status::Warn,
            format!("{e}; VMs with transport = vsock cannot start, the default (serial) can"),
        )
        .fix("scripts/setup, or `cargo install --locked vhost-device-vsock --version 0.3.0`"),
    }
}

fn transport(kind: VsockKind) -> Check {
    let (t, why) = host::default_transport(kind);
    Check::new(
        "transport",
        Status::Ok,
        format!("{} by default: {why}", t.as_str()),
    )
}

/// The first line of `qemu-system-x86_64 --version`, shortened.
pub fn qemu_version(output: &str) -> Option<String> {
    let line = output.lines().next()?.trim();
    let version = line.strip_prefix("QEMU emulator version ")?;
    Some(version.to_string())
}

fn qemu_binary() -> Check {
    const NAME: &str = "qemu";
    let bin = qemu::binary();
    let shown = bin.to_string_lossy().into_owned();
    let fix = "apt-get install qemu-system-x86 (or scripts/setup), or set PROVIUM_QEMU to a \
               qemu-system-x86_64";
    match Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match qemu_version(&text) {
                Some(v) => Check::new(NAME, Status::Ok, format!("{shown}: version {v}")),
                None => Check::new(
                    NAME,
                    Status::Fail,
                    format!("{shown} --version said {:?}: not QEMU", text.trim()),
                )
                .fix(fix),
            }
        }
        Ok(out) => Check::new(
            NAME,
            Status::Fail,
            format!(
                "{shown} --version failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
        .fix(fix),
        Err(e) => Check::new(NAME, Status::Fail, format!("cannot run {shown}: {e}")).fix(fix),
    }
}

fn run_directory() -> Check {
    match RunDir::create() {
        Ok(dir) => Check::new(
            "run directory",
            Status::Ok,
            format!(
                "{} (private: sockets and logs of running VMs)",
                dir.path().parent().unwrap_or(dir.path()).display()
            ),
        ),
        // The message names the path and the fix.
        Err(e) => Check::new("run directory", Status::Fail, e.to_string()),
    }
}

fn default_image() -> Check {
    const NAME: &str = "default guest";
    match image::cached_default_image(AGENT) {
        Ok(Some(img)) => Check::new(
            NAME,
            Status::Ok,
            format!(
                "cached: key {}, kernel {} ({})",
                human::short_key(&img.key),
                img.kernel_release,
                img.kernel_package
            ),
        ),
        Ok(None) => Check::new(
            NAME,
            Status::Warn,
            "not built yet: the first boot builds it (the kernel comes from apt)",
        )
        .fix("provium image build"),
        // Busybox or the agent: the messages say what to install.
        Err(e) => Check::new(NAME, Status::Fail, e.to_string()),
    }
}

fn image_cache() -> Check {
    const NAME: &str = "image cache";
    let dir = image::cache_dir();
    let images = match image::gc::list_images() {
        Ok(i) => i,
        Err(e) => return Check::new(NAME, Status::Warn, e.to_string()),
    };
    let detail = format!(
        "{} image(s), {} in {} (fixtures excluded)",
        images.len(),
        human::bytes(image::gc::cache_disk_usage()),
        dir.display()
    );
    if images.len() > image::gc::AUTO_KEEP_RECENT + 1 {
        Check::new(NAME, Status::Warn, detail).fix("provium image gc")
    } else {
        Check::new(NAME, Status::Ok, detail)
    }
}

/// The remote fixture store, when one is set: it answers and lists its
/// fixtures. A store never fails a test, so a broken one is a warning.
fn fixture_store() -> Check {
    const NAME: &str = "fixture store";
    let remote = match Remote::configured() {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Check::new(
                NAME,
                Status::Skip,
                "none set (PROVIUM_FIXTURE_REMOTE, or [fixtures] remote in provium.toml)",
            )
        }
        Err(e) => {
            return Check::new(NAME, Status::Warn, e.to_string()).fix(
                "correct PROVIUM_FIXTURE_REMOTE (oci://host[:port]/repository) or provium.toml",
            )
        }
    };
    let start = Instant::now();
    match remote.keys() {
        Ok(keys) => Check::new(
            NAME,
            Status::Ok,
            format!(
                "{}: {} fixture(s), answered in {}",
                remote.location(),
                keys.len(),
                human::seconds(start.elapsed())
            ),
        ),
        Err(e) => Check::new(NAME, Status::Warn, e.to_string()).fix(
            "check the address and the credentials (PROVIUM_FIXTURE_REMOTE_TOKEN, \
             _USER/_PASSWORD or docker login); meanwhile fixtures are built here",
        ),
    }
}

fn fixture_cache() -> Check {
    const NAME: &str = "fixture cache";
    let cap = match fixtures::cap_bytes() {
        Ok(c) => c,
        Err(e) => {
            return Check::new(NAME, Status::Fail, e.to_string()).fix(format!(
                "unset {} or give a size like 20G",
                fixtures::CAP_VAR
            ))
        }
    };
    let dir = fixtures::cache_dir();
    if !dir.exists() {
        return Check::new(
            NAME,
            Status::Ok,
            format!(
                "empty ({} does not exist yet; cap {})",
                dir.display(),
                human::bytes(cap)
            ),
        );
    }
    match Cache::open(&dir).and_then(|c| c.list()) {
        Ok(entries) => {
            let total: u64 = entries.iter().map(|e| e.bytes_on_disk).sum();
            Check::new(
                NAME,
                Status::Ok,
                format!(
                    "{} fixture(s), {} of {} in {}",
                    entries.len(),
                    human::bytes(total),
                    human::bytes(cap),
                    dir.display()
                ),
            )
        }
        Err(e) => Check::new(NAME, Status::Warn, e.to_string()).fix("provium fixtures clean"),
    }
}

/// Boots the default guest and times `uname -r` in it.
fn boot_check() -> Check {
    const NAME: &str = "boot";
    let vm = VmArgs {
        memory: None,
        cpus: None,
        transport: None,
        boot_timeout: defaults::BOOT_TIMEOUT,
    };
    let started = Instant::now();
    let guest = match Guest::boot(
        &GuestSpec {
            name: defaults::VM_NAME_DOCTOR,
            profile: defaults::DEFAULT_PROFILE,
            vm: &vm,
        },
        BootExtras::default(),
    ) {
        Ok(g) => g,
        Err(e) => return Check::new(NAME, Status::Fail, e.to_string()),
    };
    let booted = started.elapsed();
    let uname = RunSpec {
        program: b"uname".to_vec(),
        args: vec![ByteBuf::from(b"-r".to_vec())],
        timeout_ms: Some(30_000),
        ..RunSpec::default()
    };
    let ran = Instant::now();
    let result = guest.client().roundtrip(Op::Run(uname));
    let took = ran.elapsed();
    match result.map(|done| done.result) {
        Ok(Ok(Reply::Run(out))) if out.status == ExitStatus::Exited(0) => Check::new(
            NAME,
            Status::Ok,
            format!(
                "`uname -r` said {} ({} to boot, {} to run it)",
                String::from_utf8_lossy(&out.stdout).trim(),
                human::seconds(booted),
                human::seconds(took)
            ),
        ),
        Ok(Ok(other)) => Check::new(NAME, Status::Fail, format!("`uname -r` gave {other:?}")),
        Ok(Err(f)) => Check::new(NAME, Status::Fail, format!("`uname -r` failed: {f}")),
        Err(e) => Check::new(
            NAME,
            Status::Fail,
            format!("`uname -r` failed: {e}: {}", guest.death_note()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_one_line_with_its_fix() {
        let ok = Check::new("qemu", Status::Ok, "qemu-system-x86_64: version 7.2");
        assert_eq!(
            ok.to_string(),
            "ok    qemu                qemu-system-x86_64: version 7.2"
        );
        let bad = Check::new("qemu", Status::Fail, "cannot run qemu-system-x86_64")
            .fix("apt-get install qemu-system-x86");
        assert_eq!(
            bad.to_string(),
            "FAIL  qemu                cannot run qemu-system-x86_64; fix: apt-get install qemu-system-x86"
        );
        assert!(!bad.to_string().contains('\n'));
    }

    #[test]
    fn only_a_failure_fails_the_report() {
        let warn = Check::new("kvm", Status::Warn, "tcg");
        let skip = Check::new("boot", Status::Skip, "-");
        assert_eq!(exit_code(&[warn.clone(), skip.clone()]), 0);
        let fail = Check::new("qemu", Status::Fail, "missing");
        assert_eq!(exit_code(&[warn, fail, skip]), 1);
        assert_eq!(exit_code(&[]), 0);
    }

    #[test]
    fn qemu_versions() {
        assert_eq!(
            qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            )
            .as_deref(),
            Some("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
        );
        assert_eq!(qemu_version("bash: nope"), None);
        assert_eq!(qemu_version(""), None);
    }
}
