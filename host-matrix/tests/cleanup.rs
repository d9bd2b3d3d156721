//! An interrupted host-matrix leaves nothing behind: no QEMU, no virtiofsd,
//! no temporary directory. Boots a real L1 (needs root and the cached guest
//! kernel that `scripts/setup` fetches).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn sigint_during_a_nested_run_leaves_nothing_behind() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a nested host needs root (virtiofsd)");
        return;
    }
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provium-host-matrix"))
        .args([
            "--kind",
            "kvm-kernel-vsock",
            "--timeout",
            "300",
            "--",
            "sleep",
            "600",
        ])
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("host-matrix starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let start = Instant::now();
    let mut up = false;
    while let Some(Ok(line)) = lines.next() {
        eprintln!("{line}");
        if line.starts_with("L1: host-matrix: L1 up") {
            up = true;
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no L1 after 120 s"
        );
    }
    assert!(up, "the L1 never came up");
    let ours = scratch.path().display().to_string();
    assert!(
        !processes_mentioning(&ours).is_empty(),
        "QEMU and virtiofsd should run from {ours}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("host-matrix ends");
    assert_eq!(
        status.code(),
        Some(125),
        "exit status of an interrupted run"
    );
    assert_eq!(processes_mentioning(&ours), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("scratch dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(Path::new(&ours).is_dir());
}
