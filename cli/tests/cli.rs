//! The `provium` binary end to end. The tests marked "boots" start real
//! QEMU guests (the default image, built on first use), one at a time;
//! the shell test drives `provium shell` in a detached tmux session.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provium");

/// One guest at a time: the machines running these tests have 2 cores.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// Takes the one-guest lock, with the default image built (its progress
/// lines would otherwise be in the first booting test's stderr).
fn one_guest() -> std::sync::MutexGuard<'static, ()> {
    static IMAGE: std::sync::Once = std::sync::Once::new();
    let guard = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    IMAGE.call_once(|| {
        let built = output(&mut provium(&["image", "build"]));
        assert_eq!(built.status.code(), Some(0), "{}", text(&built.stderr));
    });
    guard
}

fn provium(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).stdin(Stdio::null());
    c
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("provium starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Processes whose command line mentions `needle` (zombies have none).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let line = text(&cmdline).replace('\0', " ");
        if line.contains(needle) && !line.contains("capture-pane") {
            found.push(format!("{}: {line}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// A private run directory base, so that this test's QEMU can be told from
/// any other (its sockets' paths contain it).
fn private_tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("provium-cli-test-")
        .tempdir()
        .expect("temporary directory")
}

fn run_in(tmp: &Path, args: &[&str]) -> Output {
    output(
        provium(args)
            .env("TMPDIR", tmp)
            .env_remove("XDG_RUNTIME_DIR"),
    )
}

fn assert_no_qemu_in(tmp: &Path) {
    let needle = tmp.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = processes_mentioning(&needle)
            .into_iter()
            .filter(|p| p.contains("qemu-system"))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "QEMU left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn help_and_version_exit_zero_and_usage_errors_exit_two() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["doctor", "--help"],
        &["run", "--help"],
        &["shell", "--help"],
        &["image", "--help"],
        &["image", "build", "--help"],
        &["image", "list", "--help"],
        &["image", "gc", "--help"],
        &["fixtures", "--help"],
        &["fixtures", "list", "-h"],
        &["fixtures", "clean", "-h"],
        &["fixtures", "dir", "-h"],
        &["shard", "--help"],
    ] {
        let out = output(&mut provium(args));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
    for args in [
        &[][..],
        &["run"],
        &["run", "--memory", "12", "--", "true"],
        &["image", "gc", "--keep", "x"],
        &["shard", "--total", "2", "spec"],
        &["shard", "--total", "x", "--index", "0", "spec"],
        &["nope"],
    ] {
        let out = output(&mut provium(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("--help"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn shards_cover_the_suite_once_and_agree_between_runs() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec");
    let mut all = Vec::new();
    for index in 0..3 {
        let i = index.to_string();
        let args = ["shard", "--total", "3", "--index", &i, spec];
        let out = output(&mut provium(&args));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let again = output(&mut provium(&args));
        assert_eq!(
            out.stdout, again.stdout,
            "shard {index} changed between runs"
        );
        let files: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        assert!(!files.is_empty(), "shard {index} is empty");
        all.extend(files);
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a file is in two shards");
    let mut want: Vec<String> = std::fs::read_dir(spec)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with("_spec.lua"))
        .collect();
    want.sort();
    assert_eq!(all, want);
    let out = output(&mut provium(&[
        "shard", "--total", "3", "--index", "3", spec,
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--index 3 is out of range for --total 3"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_shell_needs_a_terminal() {
    let out = output(&mut provium(&["shell"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stdin is not a terminal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn doctor_prints_every_check_and_passes_here() {
    let out = output(&mut provium(&["doctor"]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for check in [
        "kvm",
        "vhost-vsock",
        "vhost-device-vsock",
        "transport",
        "qemu",
        "run directory",
        "default guest",
        "image cache",
        "fixture cache",
        "fixture store",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check))),
            "no {check:?} line in:\n{stdout}"
        );
    }
    for line in stdout.lines() {
        let status = line.split_whitespace().next().unwrap_or_default();
        assert!(["ok", "warn", "skip"].contains(&status), "{line}");
        if status == "warn" {
            assert!(
                line.contains("; fix: "),
                "a warning without its fix: {line}"
            );
        }
    }
}

#[test]
fn doctor_warns_about_an_unreachable_fixture_store_and_still_passes() {
    let out = output(provium(&["doctor"]).env("PROVIUM_FIXTURE_REMOTE", "oci://127.0.0.1:1/x"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("warn  fixture store"))
        .unwrap_or_else(|| panic!("no fixture store warning in:\n{stdout}"));
    assert!(
        line.contains("oci+http://127.0.0.1:1/x: listing the fixtures failed")
            && line.contains("Connection refused")
            && line.contains("; fix: check the address and the credentials"),
        "{line}"
    );
}

#[test]
fn doctor_fails_without_qemu_and_names_the_fix() {
    let out = output(provium(&["doctor"]).env("PROVIUM_QEMU", "/nonexistent/qemu"));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  qemu"))
        .unwrap_or_else(|| panic!("no failing qemu line:\n{stdout}"));
    assert!(line.contains("apt-get install qemu-system-x86"), "{line}");
}

/// boots
#[test]
fn run_prints_the_guest_kernel_release() {
    let _one = one_guest();
    let built = output(&mut provium(&["image", "build"]));
    assert_eq!(built.status.code(), Some(0), "{}", text(&built.stderr));
    // "default guest image <key> (kernel <release>, <package>)"
    let release = text(&built.stdout)
        .split("(kernel ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .map(str::to_string)
        .expect("the image build names the kernel");
    let tmp = private_tmp();
    let out = run_in(tmp.path(), &["run", "default", "--", "uname", "-r"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{release}\n"));
    assert_no_qemu_in(tmp.path());
}

/// boots
#[test]
fn a_failing_commands_status_and_streams_come_back() {
    let _one = one_guest();
    let tmp = private_tmp();
    let out = run_in(
        tmp.path(),
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "to-stdout\n");
    assert_eq!(text(&out.stderr), "to-stderr\n");
    assert_no_qemu_in(tmp.path());
}

/// boots
#[test]
fn stdin_goes_in_and_a_signal_is_128_plus_its_number() {
    let _one = one_guest();
    let tmp = private_tmp();
    let mut child = provium(&["run", "--", "sh", "-c", "tr a-z A-Z; kill -TERM $$"])
        .env("TMPDIR", tmp.path())
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("provium starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello guest\n").expect("write stdin");
    }
    let out = child.wait_with_output().expect("provium ends");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO GUEST\n");
    assert_no_qemu_in(tmp.path());
}

/// boots
#[test]
fn a_missing_program_is_127_and_says_so() {
    let _one = one_guest();
    let tmp = private_tmp();
    let out = run_in(tmp.path(), &["run", "--", "no-such-program", "x"]);
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run no-such-program in the guest: No such file or directory"),
        "{err}"
    );
    assert_no_qemu_in(tmp.path());
}

#[test]
fn an_unknown_profile_is_a_provium_failure_naming_the_profile() {
    let tmp = private_tmp();
    let out = output(
        provium(&["run", "nosuch", "--", "true"])
            .env_remove("PROVIUM_CONFIG")
            .current_dir(tmp.path()),
    );
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(err.starts_with("provium run: "), "{err}");
    assert!(err.contains("nosuch"), "{err}");
}

/// A fake image in the cache at `cache`, last used `age` ago.
fn fake_image(cache: &Path, key: &str, age: Duration) {
    let dir = cache.join("provium/images").join(key);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("initrd.cpio"), vec![1u8; 10_000]).expect("initrd");
    let manifest = format!(
        r#"{{"key": "{key}", "format": "provium-guest-image/1",
            "kernel_package": "linux-image-test=1", "kernel_release": "6.1.0-test",
            "kernel_deb_blake3": "00", "kernel_dir": "/k", "modules": [],
            "busybox_blake3": "11", "init_blake3": "22", "initrd_size": 10000,
            "vmlinux_size": 0, "built": "2026-01-01T00:00:00Z"}}"#
    );
    std::fs::write(dir.join("manifest.json"), manifest).expect("manifest");
    let stamp = std::fs::File::create(dir.join("last-used")).expect("stamp");
    stamp
        .set_modified(std::time::SystemTime::now() - age)
        .expect("mtime");
}

#[test]
fn image_list_and_gc_in_a_cache_of_their_own() {
    let cache = private_tmp();
    let key = |c: char| c.to_string().repeat(64);
    fake_image(cache.path(), &key('a'), Duration::from_secs(60));
    fake_image(cache.path(), &key('b'), Duration::from_secs(3600));
    fake_image(cache.path(), &key('c'), Duration::from_secs(86_400 * 3));
    let with_cache = |args: &[&str]| output(provium(args).env("XDG_CACHE_HOME", cache.path()));

    let list = with_cache(&["image", "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let rows: Vec<String> = text(&list.stdout).lines().map(str::to_string).collect();
    assert!(rows[0].starts_with("KEY"), "{rows:?}");
    assert!(
        rows[1].starts_with(&key('a')[..16]) && rows[1].contains("60 s ago"),
        "{rows:?}"
    );
    assert!(
        rows[2].starts_with(&key('b')[..16]) && rows[2].contains("60 min ago"),
        "{rows:?}"
    );
    assert!(
        rows[3].starts_with(&key('c')[..16]) && rows[3].contains("3 days ago"),
        "{rows:?}"
    );
    assert!(rows[1].contains("6.1.0-test"), "{rows:?}");
    assert!(rows[4].starts_with("3 image(s)"), "{rows:?}");

    let dry = with_cache(&["image", "gc", "--keep", "1", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0));
    let said = text(&dry.stdout);
    assert!(
        said.contains(&format!("would remove {}", &key('b')[..16])),
        "{said}"
    );
    assert!(
        said.contains(&format!("would remove {}", &key('c')[..16])),
        "{said}"
    );
    assert!(cache.path().join("provium/images").join(key('c')).is_dir());

    let gc = with_cache(&["image", "gc", "--keep", "1"]);
    assert_eq!(gc.status.code(), Some(0), "{}", text(&gc.stderr));
    let said = text(&gc.stdout);
    assert!(
        said.contains(&format!("removed {}", &key('c')[..16])),
        "{said}"
    );
    assert!(said.contains("freed "), "{said}");
    let left: Vec<String> = std::fs::read_dir(cache.path().join("provium/images"))
        .expect("images")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [key('a')], "only the most recently used is kept");
}

#[test]
fn fixtures_dir_list_and_clean() {
    let cache = private_tmp();
    let dir = cache.path().join("fx");
    let with_cache = |args: &[&str]| output(provium(args).env("PROVIUM_FIXTURE_CACHE", &dir));
    let out = with_cache(&["fixtures", "dir"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), format!("{}\n", dir.display()));
    let out = with_cache(&["fixtures", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("no fixtures"),
        "{}",
        text(&out.stdout)
    );
    // A complete entry: a directory `<key>.snap` with its metadata file.
    let entry = dir.join(format!("{}.snap", "d".repeat(64)));
    std::fs::create_dir_all(&entry).expect("mkdir");
    std::fs::write(
        entry.join("fixture.json"),
        r#"{"builder": "/x/web.fixture.lua", "created": 0, "manifest": []}"#,
    )
    .expect("meta");
    std::fs::write(entry.join("ram"), vec![0u8; 8192]).expect("ram");
    let out = with_cache(&["fixtures", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains(&"d".repeat(16))
            && text(&out.stdout).contains("/x/web.fixture.lua"),
        "{}",
        text(&out.stdout)
    );
    let out = with_cache(&["fixtures", "clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 fixture(s) removed"),
        "{}",
        text(&out.stdout)
    );
    assert!(!entry.exists());
}

/// A tmux server of our own (its socket in a temporary directory), killed
/// when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        Tmux {
            socket: dir.join("tmux.sock"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs (apt-get install tmux; scripts/setup installs it)");
        assert!(
            out.status.success() || args[0] == "kill-server",
            "tmux {args:?}: {}",
            text(&out.stderr)
        );
        out
    }

    fn screen(&self) -> String {
        text(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout)
    }

    /// Waits until a line of the screen satisfies `want`.
    fn wait_for(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let screen = self.screen();
            if screen.lines().any(|l| want(l.trim_end())) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// Starts `provium shell` in a detached tmux session; waits for the prompt.
fn shell_in_tmux(tmp: &Path) -> Tmux {
    let tmux = Tmux::new(tmp);
    let script = format!(
        "env -u XDG_RUNTIME_DIR TMPDIR='{}' '{BIN}' shell; echo provium-exit=$?; sleep 600",
        tmp.display()
    );
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "100",
        "-y",
        "30",
        &script,
    ]);
    tmux.wait_for("shell prompt", |l| {
        l.starts_with("root@provium:") && l.ends_with('#')
    });
    tmux
}

/// boots
#[test]
fn a_shell_in_tmux_computes_and_exits_cleanly() {
    let _one = one_guest();
    let tmp = private_tmp();
    let tmux = shell_in_tmux(tmp.path());
    tmux.cmd(&["send-keys", "-t", "t", "echo hi-$((6*7))", "Enter"]);
    tmux.wait_for("hi-42", |l| l == "hi-42");
    tmux.cmd(&["send-keys", "-t", "t", "stty size", "Enter"]);
    tmux.wait_for("the window size", |l| l == "30 100");
    tmux.cmd(&["send-keys", "-t", "t", "exit", "Enter"]);
    tmux.wait_for("provium's exit status", |l| l == "provium-exit=0");
    assert_no_qemu_in(tmp.path());
}

/// boots
#[test]
fn closing_the_terminal_kills_the_guest() {
    let _one = one_guest();
    let tmp = private_tmp();
    let tmux = shell_in_tmux(tmp.path());
    let needle = tmp.path().display().to_string();
    assert!(
        processes_mentioning(&needle)
            .iter()
            .any(|p| p.contains("qemu-system")),
        "no QEMU while the shell runs"
    );
    tmux.cmd(&["kill-session", "-t", "t"]);
    assert_no_qemu_in(tmp.path());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !provium_processes_with(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "provium left behind: {:?}",
            provium_processes_with(&needle)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of `provium` processes whose environment mentions `needle`.
fn provium_processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if cmdline.starts_with(BIN.as_bytes()) && text(&environ).contains(needle) {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}
