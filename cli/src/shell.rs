//! `provium shell`: an interactive shell in a fresh guest.
//!
//! The guest is booted with an interactive console port
//! ([`BootExtras::console_port`]): a `virtconsole`, which is a real tty in the
//! guest (`/dev/hvc0`), whose host end is a Unix socket QEMU listens on.
//! Through the agent we start, from a plain `sh`, BusyBox's `setsid -c sh -l`
//! on that tty: a login shell in a session of its own with the tty as its
//! controlling terminal, so job control works and the tty's line discipline
//! turns Ctrl-C and Ctrl-Z into signals for the guest's foreground job. The
//! outer `sh` waits for it and exits with its status, which the agent
//! reports to us (`ProcWait`).
//!
//! On the host, the terminal goes into raw mode and two threads copy bytes:
//! terminal → socket and socket → terminal. A resize of the terminal
//! (SIGWINCH) is passed on with `stty -F /dev/hvc0 rows R cols C` in the
//! guest, which signals the guest's foreground job in turn. The session ends
//! when the shell exits, on Ctrl-] (the escape byte), when the terminal goes
//! away (SIGHUP, end of input) or on SIGTERM/SIGINT/SIGQUIT; on every path the
//! terminal is restored and the guest killed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provium::transport::{Client, TransportError};
use provium::vm::BootExtras;
use provium_protocol::{HandleId, Op, Reply, RunSpec};
use serde_bytes::ByteBuf;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;

use crate::boot::{self, BootError, Guest, GuestSpec};
use crate::cli::ShellArgs;
use crate::defaults::{self, exit};
use crate::run::status_code;
use crate::term::{self, RawMode, TermError, WinSize};

/// Started by the agent as `sh -c SCRIPT provium-shell TTY ROWS COLS STEPS`:
/// waits for the console tty and runs a login shell on it (as described in
/// the module documentation), which first sets the tty's size: the size
/// lives only while the tty is open, so it is set by the process that
/// holds it open. The shell starts in a subshell: `&` would start it with
/// SIGINT and SIGQUIT ignored (then Ctrl-C could not stop its jobs), and
/// as the script's last command ash would exec it in place, as the process
/// group leader that BusyBox's `setsid` leaves to a fork it does not wait
/// for. Neither a group leader nor in the background, `setsid` needs no
/// fork, and the shell's status comes back here.
const START_SCRIPT: &str = r#"tty=$1 rows=$2 cols=$3 steps=$4
i=0
while [ ! -c "$tty" ]; do
  i=$((i + 1))
  if [ "$i" -gt "$steps" ]; then
    echo "provium: $tty did not appear in the guest (is virtio_console in the image?)" >&2
    exit 125
  fi
  sleep 0.05
done
cd "$HOME" 2>/dev/null || cd /
(exec setsid -c sh -c 'if [ -n "$1" ]; then stty rows "$1" cols "$2"; fi; exec sh -l' sh "$rows" "$cols" <>"$tty" >&0 2>&0)
status=$?
exit $status
"#;

/// `TERM` of the guest shell when ours is unset.
const FALLBACK_TERM: &str = "vt100";
/// How long a resize (`stty` in the guest) may take.
const RESIZE_TIMEOUT_MS: u64 = 5_000;
/// How long we wait for QEMU's end after the console port closed, to tell
/// a guest that powered off from one that died.
const SETTLE: Duration = Duration::from_secs(2);

/// Why a shell session could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// the host terminal cannot be used
    #[error(transparent)]
    Term(#[from] TermError),
    /// the guest did not boot
    #[error(transparent)]
    Boot(#[from] BootError),
    /// the machine came up without its console port
    #[error("the guest was booted without its console port")]
    NoConsolePort,
    /// the console port's socket cannot be reached
    #[error("cannot connect to the guest's console port {}: {source}", .path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the agent did not start the shell
    #[error("cannot start the shell in the guest: {0}")]
    Start(String),
    /// a helper thread or the signal watch cannot be set up
    #[error("cannot {0}: {1}")]
    Setup(&'static str, std::io::Error),
}

impl ShellError {
    /// The exit code that stands for this failure: 130 for Ctrl-C during
    /// the boot, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ShellError::Boot(BootError::Interrupted) => exit::SIGNAL_BASE + SIGINT,
            _ => exit::FAILURE,
        }
    }
}

/// How a session ended.
#[derive(Debug)]
enum Ending {
    /// The shell exited with this code; the start script's stderr.
    Exited(i32, Vec<u8>),
    /// The user typed the escape byte.
    Escaped,
    /// We received this signal.
    Signal(i32),
    /// Our terminal is gone (end of input, or it cannot be written).
    TerminalGone,
    /// The console port or the agent connection closed: the guest ended.
    GuestGone,
}

/// Runs a shell session; `Ok` carries the exit code.
pub fn shell(args: &ShellArgs) -> Result<i32, ShellError> {
    term::require_terminal()?;
    eprintln!("provium: booting profile {:?} ...", args.profile);
    let started = Instant::now();
    let guest = Guest::boot(
        &GuestSpec {
            name: defaults::VM_NAME_SHELL,
            profile: &args.profile,
            vm: &args.vm,
        },
        BootExtras {
            console_port: true,
            ..Default::default()
        },
    )?;
    let path = guest
        .machine()
        .console_port()
        .ok_or(ShellError::NoConsolePort)?
        .to_path_buf();
    let port = UnixStream::connect(&path).map_err(|source| ShellError::Connect {
        path: path.clone(),
        source,
    })?;
    let client = guest.client().clone();
    // Watched from before the shell starts: a SIGHUP from now on still
    // kills the guest and restores the terminal.
    let signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGWINCH])
        .map_err(|e| ShellError::Setup("watch signals", e))?;
    let signal_handle = signals.handle();
    let handle = start_shell(&client, term::size())?;
    eprintln!(
        "provium: {}; a shell on {} (leave with `exit`, or Ctrl-] to kill the guest)",
        boot::describe(&args.profile, started.elapsed()),
        defaults::GUEST_TTY
    );

    let (tx, rx) = mpsc::channel::<Ending>();
    spawn(
        "watch signals",
        watch_signals(signals, client.clone(), tx.clone()),
    )?;
    spawn(
        "wait for the shell",
        wait_shell(client.clone(), handle, tx.clone()),
    )?;
    let raw = RawMode::enter()?;
    let last_output = Arc::new(Mutex::new(Instant::now()));
    let to_host = port
        .try_clone()
        .map_err(|e| ShellError::Setup("duplicate the console socket", e))?;
    spawn(
        "copy guest output",
        pump_out(to_host, last_output.clone(), tx.clone()),
    )?;
    spawn("copy terminal input", pump_in(port, tx.clone()))?;
    drop(tx);

    let ending = rx.recv().unwrap_or(Ending::GuestGone);
    if matches!(ending, Ending::Exited(..)) {
        drain(&last_output);
    }
    drop(raw);
    signal_handle.close();
    Ok(conclude(ending, &guest))
}

/// The exit code of an ending, saying on stderr what happened when it was
/// not the shell's own exit.
fn conclude(ending: Ending, guest: &Guest) -> i32 {
    match ending {
        Ending::Exited(code, stderr) => {
            if !stderr.is_empty() {
                let _ = std::io::stderr().write_all(&stderr);
            }
            code
        }
        Ending::Escaped => {
            eprintln!("provium: left the shell (Ctrl-]); the guest is killed");
            exit::FAILURE
        }
        Ending::Signal(sig) => {
            eprintln!("provium: {}; the guest is killed", signal_name(sig));
            exit::SIGNAL_BASE + sig
        }
        Ending::TerminalGone => {
            eprintln!("provium: the terminal went away; the guest is killed");
            exit::SIGNAL_BASE + SIGHUP
        }
        Ending::GuestGone => {
            let deadline = Instant::now() + SETTLE;
            while guest.machine().dead_reason().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if guest.machine().guest_shut_down() {
                eprintln!("provium: the guest powered off");
                exit::SUCCESS
            } else {
                eprintln!("provium: the guest died: {}", guest.death_note());
                exit::FAILURE
            }
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGHUP => "SIGHUP (the terminal closed)",
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

/// The `RunAsync` that starts the shell.
fn start_spec(size: Option<WinSize>) -> RunSpec {
    let term = std::env::var_os("TERM")
        .filter(|t| !t.is_empty())
        .map(|t| std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()).to_vec())
        .unwrap_or_else(|| FALLBACK_TERM.as_bytes().to_vec());
    let (rows, cols) = match size {
        Some(s) => (s.rows.to_string(), s.cols.to_string()),
        None => (String::new(), String::new()),
    };
    let words = [
        "-c",
        START_SCRIPT,
        "provium-shell",
        defaults::GUEST_TTY,
        &rows,
        &cols,
        &defaults::GUEST_TTY_WAIT_STEPS.to_string(),
    ];
    RunSpec {
        program: b"sh".to_vec(),
        args: words
            .iter()
            .map(|w| ByteBuf::from(w.as_bytes().to_vec()))
            .collect(),
        env: vec![(ByteBuf::from(b"TERM".to_vec()), ByteBuf::from(term))],
        ..RunSpec::default()
    }
}

/// Starts the shell through the agent; returns its process handle.
fn start_shell(client: &Client, size: Option<WinSize>) -> Result<HandleId, ShellError> {
    let done = client
        .roundtrip(Op::RunAsync(start_spec(size)))
        .map_err(|e| ShellError::Start(e.to_string()))?;
    match done.result {
        Ok(Reply::Process { handle, .. }) => Ok(handle),
        Ok(other) => Err(ShellError::Start(format!(
            "the agent answered with {other:?}"
        ))),
        Err(f) => Err(ShellError::Start(f.to_string())),
    }
}

/// The `stty` that tells the guest tty its new size.
fn resize_spec(size: WinSize) -> RunSpec {
    let words = [
        "-F".to_string(),
        defaults::GUEST_TTY.to_string(),
        "rows".to_string(),
        size.rows.to_string(),
        "cols".to_string(),
        size.cols.to_string(),
    ];
    RunSpec {
        program: b"stty".to_vec(),
        args: words
            .into_iter()
            .map(|w| ByteBuf::from(w.into_bytes()))
            .collect(),
        timeout_ms: Some(RESIZE_TIMEOUT_MS),
        ..RunSpec::default()
    }
}

fn spawn(what: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), ShellError> {
    std::thread::Builder::new()
        .name(format!("provium-{}", what.replace(' ', "-")))
        .spawn(f)
        .map(drop)
        .map_err(|e| ShellError::Setup(what, e))
}

fn watch_signals(
    mut signals: Signals,
    client: Arc<Client>,
    tx: mpsc::Sender<Ending>,
) -> impl FnOnce() + Send + 'static {
    move || {
        for sig in signals.forever() {
            if sig == SIGWINCH {
                if let Some(size) = term::size() {
                    // A failed resize only leaves the old size.
                    let _ = client.roundtrip(Op::Run(resize_spec(size)));
                }
                continue;
            }
            let _ = tx.send(Ending::Signal(sig));
        }
    }
}

fn wait_shell(
    client: Arc<Client>,
    handle: HandleId,
    tx: mpsc::Sender<Ending>,
) -> impl FnOnce() + Send + 'static {
    move || {
        let waited = client.roundtrip(Op::ProcWait {
            handle,
            timeout_ms: None,
        });
        let ending = match waited {
            Ok(done) => match done.result {
                Ok(Reply::Run(outcome)) => {
                    let code = status_code(outcome.status).unwrap_or(exit::FAILURE);
                    let mut stderr = done.channels[provium_protocol::CH_STDERR as usize].clone();
                    stderr.extend_from_slice(&outcome.stderr);
                    Ending::Exited(code, stderr)
                }
                _ => Ending::GuestGone,
            },
            Err(TransportError::Interrupted) => Ending::Signal(SIGINT),
            Err(_) => Ending::GuestGone,
        };
        let _ = tx.send(ending);
    }
}

/// Guest → terminal.
fn pump_out(
    mut port: UnixStream,
    last_output: Arc<Mutex<Instant>>,
    tx: mpsc::Sender<Ending>,
) -> impl FnOnce() + Send + 'static {
    move || {
        let mut buf = vec![0u8; defaults::PUMP_BUFFER];
        loop {
            let n = match port.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Ending::GuestGone);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    let _ = tx.send(Ending::GuestGone);
                    return;
                }
            };
            *last_output.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            let mut out = std::io::stdout().lock();
            if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                let _ = tx.send(Ending::TerminalGone);
                return;
            }
        }
    }
}

/// Terminal → guest, watching for the escape byte.
fn pump_in(mut port: UnixStream, tx: mpsc::Sender<Ending>) -> impl FnOnce() + Send + 'static {
    move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; defaults::PUMP_BUFFER];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Ending::TerminalGone);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    let _ = tx.send(Ending::TerminalGone);
                    return;
                }
            };
            let (input, escaped) = split_at_escape(&buf[..n]);
            if port.write_all(input).is_err() {
                let _ = tx.send(Ending::GuestGone);
                return;
            }
            if escaped {
                let _ = tx.send(Ending::Escaped);
                return;
            }
        }
    }
}

/// The input before the escape byte, and whether it came.
fn split_at_escape(input: &[u8]) -> (&[u8], bool) {
    match input.iter().position(|&b| b == defaults::ESCAPE_BYTE) {
        Some(at) => (&input[..at], true),
        None => (input, false),
    }
}

/// Waits until the guest's last output has been copied: the port quiet for
/// a moment, or a bound.
fn drain(last_output: &Mutex<Instant>) {
    let start = Instant::now();
    loop {
        let quiet = last_output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if quiet >= defaults::DRAIN_QUIET || start.elapsed() >= defaults::DRAIN_MAX {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_byte_ends_input_there() {
        assert_eq!(split_at_escape(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_at_escape(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_at_escape(b"\x1d"), (&b""[..], true));
        assert_eq!(split_at_escape(b"\x03\x1a"), (&b"\x03\x1a"[..], false));
    }

    #[test]
    fn the_start_spec_names_the_tty_and_the_size() {
        let s = start_spec(Some(WinSize {
            rows: 40,
            cols: 132,
        }));
        assert_eq!(s.program, b"sh");
        let args: Vec<String> = s
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(args[0], "-c");
        assert!(args[1].contains("setsid -c sh -c"));
        assert_eq!(
            &args[2..],
            ["provium-shell", "/dev/hvc0", "40", "132", "100"]
        );
        assert_eq!(s.env.len(), 1);
        assert_eq!(&s.env[0].0[..], b"TERM");
        let unknown = start_spec(None);
        assert_eq!(&unknown.args[4][..], b"");
        assert!(!unknown.stdin_more && unknown.timeout_ms.is_none());
    }

    #[test]
    fn a_resize_is_an_stty_on_the_console_tty() {
        let s = resize_spec(WinSize {
            rows: 50,
            cols: 200,
        });
        assert_eq!(s.program, b"stty");
        let args: Vec<&[u8]> = s.args.iter().map(|a| &a[..]).collect();
        assert_eq!(
            args,
            [&b"-F"[..], b"/dev/hvc0", b"rows", b"50", b"cols", b"200"]
        );
        assert_eq!(s.timeout_ms, Some(RESIZE_TIMEOUT_MS));
    }
}
