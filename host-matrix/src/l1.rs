//! A nested host: an L1 guest under TCG that boots the project's cloud
//! kernel with an initramfs built by provium's own image code, mounts this
//! machine's root read-only over virtiofs (under a tmpfs overlay), loads the
//! modules of its host kind and runs one command there.
//!
//! Measured on our machines (see `../BENCHMARKS.md`): one L1 vCPU (two made
//! nested KVM guests stall), 4 GiB of memfd RAM shared with virtiofsd.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kind::Kind;
use crate::run::{self, Guard, RunError, Seen};

/// Stage 1 (`/init` of the L1 initramfs).
const INIT: &[u8] = include_bytes!("init.sh");
/// Stage 2, run in the host's root.
const STAGE2: &[u8] = include_bytes!("stage2.sh");

/// The modules an L1 may load (their dependencies come along); the init
/// skips those its kind must not have.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtiofs",
    "overlay",
    "kvm_amd",
    "vhost_vsock",
];

/// virtiofsd from qemu-system-common.
const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// How long virtiofsd may take to create its socket.
const VIRTIOFSD_START: Duration = Duration::from_secs(10);

/// One command to run somewhere.
pub struct Job {
    pub kind: Kind,
    /// argv of the command.
    pub command: Vec<String>,
    /// Working directory (the same path on this machine and in L1).
    pub cwd: PathBuf,
    /// Environment of the command (besides a basic PATH/HOME/LANG).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_mib: u64,
}

/// How a job ended.
pub struct Outcome {
    /// The command's exit status.
    pub exit: i32,
    pub summaries: Vec<String>,
    pub seconds: f64,
}

/// Runs `job` in an L1 of its kind (or, for the outer kind, right here),
/// streaming its output with a prefix.
pub fn run(job: &Job, stop: &Arc<AtomicBool>) -> Result<Outcome, RunError> {
    if job.kind.nested() {
        run_nested(job, stop)
    } else {
        run_here(job, stop)
    }
}

/// The environment every command gets.
fn base_env() -> Vec<(String, String)> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut env = vec![
        (
            "PATH".to_string(),
            format!(
                "{home}/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
        ),
        ("HOME".to_string(), home),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("TERM".to_string(), "dumb".to_string()),
    ];
    // Not XDG_RUNTIME_DIR: run directories must be on the L1's own tmpfs.
    for (k, v) in std::env::vars() {
        if k.starts_with("PROVIUM_") || k == "RUST_BACKTRACE" || k == "XDG_CACHE_HOME" {
            env.push((k, v));
        }
    }
    env
}

/// The command as a shell script: environment, directory, command; stderr
/// joins stdout.
fn command_script(job: &Job) -> String {
    let mut s = String::from("# written by provium host-matrix\n");
    for (k, v) in base_env().iter().chain(job.env.iter()) {
        s.push_str(&format!("export {k}={}\n", run::shell_quote(v)));
    }
    s.push_str(&format!(
        "cd {} || exit 126\n",
        run::shell_quote(&job.cwd.display().to_string())
    ));
    let argv: Vec<String> = job.command.iter().map(|a| run::shell_quote(a)).collect();
    s.push_str(&format!("exec {} 2>&1\n", argv.join(" ")));
    s
}

fn run_here(job: &Job, stop: &Arc<AtomicBool>) -> Result<Outcome, RunError> {
    let start = Instant::now();
    let script = command_script(job);
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{script}\n"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Guard::spawn("the command", cmd)?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = child
        .take_stdout()
        .ok_or_else(|| RunError::Setup("no stdout pipe".into()))?;
    let reader = run::stream(out, "L0: ", seen.clone());
    let status = run::wait(&mut child, &mut [], stop, job.timeout)?;
    let _ = reader.join();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Outcome {
        exit: status.code().unwrap_or(128),
        summaries: seen.summaries,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn run_nested(job: &Job, stop: &Arc<AtomicBool>) -> Result<Outcome, RunError> {
    let start = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RunError::Setup(format!(
            "a nested host ({}) needs root: virtiofsd serves this machine's root to it",
            job.kind
        )));
    }
    let cache = provium::image::cache_dir();
    if cache.starts_with("/tmp") || cache.starts_with("/run") {
        return Err(RunError::Setup(format!(
            "the provium cache {} is under /tmp or /run, which a nested host mounts afresh: \
             set XDG_CACHE_HOME to a directory elsewhere",
            cache.display()
        )));
    }
    let image =
        provium::image::script_image(INIT, MODULES, &|line| eprintln!("host-matrix: {line}"))
            .map_err(|e| RunError::Setup(format!("cannot build the L1 image: {e}")))?;
    let tmp = tempfile::Builder::new()
        .prefix("provium-host-matrix-")
        .tempdir()
        .map_err(|e| RunError::Setup(format!("cannot create a temporary directory: {e}")))?;

    // The initramfs: the cached image, then this run's stage 2 and command.
    let extra = provium::image::extra_cpio(&[
        ("hm/stage2".to_string(), STAGE2.to_vec(), 0o755),
        (
            "hm/command".to_string(),
            command_script(job).into_bytes(),
            0o755,
        ),
    ]);
    let initrd = tmp.path().join("initrd.cpio");
    let mut bytes = std::fs::read(&image.initrd)
        .map_err(|e| RunError::Setup(format!("cannot read {}: {e}", image.initrd.display())))?;
    bytes.extend_from_slice(&extra);
    std::fs::write(&initrd, bytes)
        .map_err(|e| RunError::Setup(format!("cannot write {}: {e}", initrd.display())))?;

    let fs_sock = tmp.path().join("virtiofs.sock");
    let mut virtiofsd = start_virtiofsd(&fs_sock, tmp.path())?;
    let mut qemu = Guard::spawn(
        "QEMU (L1)",
        qemu_command(job, &image.kernel, &initrd, &fs_sock),
    )?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = qemu
        .take_stdout()
        .ok_or_else(|| RunError::Setup("no stdout pipe from QEMU".into()))?;
    let reader = run::stream(out, "L1: ", seen.clone());
    let waited = run::wait(&mut qemu, &mut [&mut virtiofsd], stop, job.timeout);
    drop(qemu);
    let _ = reader.join();
    drop(virtiofsd);
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let status = waited?;
    let exit = seen.exit.ok_or_else(|| {
        let qemu_err = std::fs::read_to_string(tmp.path().join("qemu.stderr")).unwrap_or_default();
        RunError::NoStatus(format!(
            "the L1 ({}) ended without the command's exit status (QEMU {status}){}",
            job.kind,
            if qemu_err.trim().is_empty() {
                String::new()
            } else {
                format!("; QEMU said: {}", qemu_err.trim())
            }
        ))
    })?;
    Ok(Outcome {
        exit,
        summaries: seen.summaries,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn start_virtiofsd(sock: &Path, dir: &Path) -> Result<Guard, RunError> {
    if !Path::new(VIRTIOFSD).is_file() {
        return Err(RunError::Setup(format!(
            "{VIRTIOFSD} is missing (Debian package qemu-system-common; run scripts/setup)"
        )));
    }
    let log = std::fs::File::create(dir.join("virtiofsd.log"))
        .map_err(|e| RunError::Setup(format!("cannot create virtiofsd.log: {e}")))?;
    let mut cmd = Command::new(VIRTIOFSD);
    cmd.arg(format!("--socket-path={}", sock.display()))
        .args([
            "-o",
            "source=/",
            "-o",
            "cache=always",
            "-o",
            "sandbox=chroot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut guard = Guard::spawn("virtiofsd", cmd)?;
    let start = Instant::now();
    while !sock.exists() {
        if let Some(status) = guard.exited() {
            let log = std::fs::read_to_string(dir.join("virtiofsd.log")).unwrap_or_default();
            return Err(RunError::Setup(format!(
                "virtiofsd ended ({status}) before creating its socket: {}",
                log.trim()
            )));
        }
        if start.elapsed() > VIRTIOFSD_START {
            return Err(RunError::Setup(format!(
                "virtiofsd did not create {} within {VIRTIOFSD_START:?}",
                sock.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(guard)
}

fn qemu_command(job: &Job, kernel: &Path, initrd: &Path, fs_sock: &Path) -> Command {
    let mem = job.memory_mib;
    let mut cmd = Command::new(
        std::env::var_os("PROVIUM_HOST_MATRIX_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into()),
    );
    cmd.args(["-M", "q35", "-accel", "tcg", "-cpu", job.kind.l1_cpu()])
        // One vCPU: with two, nested KVM guests stalled L1 (see nested-host notes).
        .args(["-smp", "1", "-m", &format!("{mem}M")])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            "-numa",
            "node,memdev=mem",
        ])
        .args(["-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-display", "none", "-serial", "stdio"])
        .args([
            "-chardev",
            &format!("socket,id=fs0,path={}", fs_sock.display()),
            "-device",
            "vhost-user-fs-pci,chardev=fs0,tag=hostroot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!(
                "console=ttyS0 panic=-1 quiet cryptomgr.notests tsc_early_khz={} hm.kind={}",
                provium::vm::tsc::host_tsc_khz(),
                job.kind
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    match std::fs::File::create(initrd.with_file_name("qemu.stderr")) {
        Ok(f) => cmd.stderr(f),
        Err(_) => cmd.stderr(Stdio::inherit()),
    };
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_script_sets_env_and_directory() {
        let job = Job {
            kind: Kind::KvmKernelVsock,
            command: vec!["echo".into(), "a b".into()],
            cwd: PathBuf::from("/work/it's"),
            env: vec![("X".into(), "1 2".into())],
            timeout: Duration::from_secs(1),
            memory_mib: 64,
        };
        let s = command_script(&job);
        assert!(s.contains("export X='1 2'\n"), "{s}");
        assert!(s.contains("cd '/work/it'\\''s' || exit 126\n"), "{s}");
        assert!(s.ends_with("exec echo 'a b' 2>&1\n"), "{s}");
    }
}
