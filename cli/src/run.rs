//! `provium run`: one command in a fresh guest, its output streamed to ours,
//! its status turned into our exit code.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use provium::transport::client::{Event, Next, PendingCall};
use provium::transport::Client;
use provium::vm::BootExtras;
use provium_protocol::{
    ExitStatus, Failure, FailureKind, Op, Reply, RunOutcome, RunSpec, CHUNK_LEN, CH_STDERR,
    CH_STDOUT,
};
use serde_bytes::ByteBuf;

use crate::boot::{BootError, Guest, GuestSpec};
use crate::cli::RunArgs;
use crate::defaults::{self, exit};

/// Why `run` could not give the command's status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// the guest did not boot
    #[error(transparent)]
    Boot(#[from] BootError),
    /// the guest refused or failed the call
    #[error("cannot run {program} in the guest: {failure}")]
    Refused { program: String, failure: Failure },
    /// the guest or QEMU died while the command ran
    #[error("the guest died while {program} ran: {note}")]
    Died { program: String, note: String },
    /// the call could not be sent
    #[error("cannot send the command to the guest: {0}")]
    Send(provium::transport::TransportError),
    /// Ctrl-C
    #[error("interrupted (SIGINT): the command was killed")]
    Interrupted,
    /// the command ran out of its --timeout
    #[error("{program} did not finish within {secs} s (--timeout): its process group was killed")]
    TimedOut { program: String, secs: f64 },
}

impl RunError {
    /// The exit code that stands for this failure (see `defaults::exit`).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::TimedOut { .. } => exit::TIMED_OUT,
            RunError::Interrupted => exit::SIGNAL_BASE + libc::SIGINT,
            RunError::Refused { failure, .. } => refusal_code(failure),
            RunError::Boot(BootError::Interrupted) => exit::SIGNAL_BASE + libc::SIGINT,
            RunError::Boot(_) | RunError::Died { .. } | RunError::Send(_) => exit::INFRA,
        }
    }
}

/// The exit code for a call the agent failed: the shell's 127 and 126 when
/// the program cannot be started, else provium's own failure.
pub fn refusal_code(f: &Failure) -> i32 {
    match (f.kind, f.errno) {
        (FailureKind::Os, libc::ENOENT) => exit::NOT_FOUND,
        (FailureKind::Os, libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::ENOTDIR) => {
            exit::NOT_EXECUTABLE
        }
        _ => exit::INFRA,
    }
}

/// The exit code of a finished command.
pub fn status_code(status: ExitStatus) -> Option<i32> {
    match status {
        ExitStatus::Exited(code) => Some(code),
        ExitStatus::Signalled(sig) => Some(exit::SIGNAL_BASE + sig),
        ExitStatus::TimedOut => None,
    }
}

/// The command as the agent runs it.
pub fn spec(args: &RunArgs, with_stdin: bool) -> RunSpec {
    let mut words = args.command.iter().map(|w| w.as_bytes().to_vec());
    let program = words.next().unwrap_or_default();
    RunSpec {
        program,
        args: words.map(ByteBuf::from).collect(),
        env: args
            .env
            .iter()
            .map(|v| {
                (
                    ByteBuf::from(v.name.as_bytes().to_vec()),
                    ByteBuf::from(v.value.as_bytes().to_vec()),
                )
            })
            .collect(),
        env_clear: false,
        cwd: args
            .workdir
            .as_ref()
            .map(|d| ByteBuf::from(d.as_bytes().to_vec())),
        stdin: ByteBuf::new(),
        stdin_more: with_stdin,
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        max_output: None,
    }
}

/// Runs the command; `Ok` carries its exit code.
pub fn run(args: &RunArgs) -> Result<i32, RunError> {
    let program = String::from_utf8_lossy(args.program()).into_owned();
    let guest = Guest::boot(
        &GuestSpec {
            name: defaults::VM_NAME_RUN,
            profile: &args.profile,
            vm: &args.vm,
        },
        BootExtras::default(),
    )?;
    let client = guest.client().clone();
    let with_stdin = !args.no_stdin && !std::io::stdin().is_terminal();
    let call = client
        .call(Op::Run(spec(args, with_stdin)))
        .map_err(RunError::Send)?;
    if with_stdin {
        feed_stdin(client.clone(), call.id);
    }
    let outcome = relay(&client, &call).map_err(|end| match end {
        End::Interrupted => {
            client.cancel(call.id);
            RunError::Interrupted
        }
        End::Closed => RunError::Died {
            program: program.clone(),
            note: guest.death_note(),
        },
        End::Failed(failure) => RunError::Refused {
            program: program.clone(),
            failure,
        },
    })?;
    drop(guest);
    status_code(outcome.status).ok_or(RunError::TimedOut {
        program,
        secs: args.timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0),
    })
}

/// How waiting for the command ended, when it did not finish.
enum End {
    Interrupted,
    Closed,
    Failed(Failure),
}

/// Copies the command's output to ours as it comes; returns its outcome.
fn relay(client: &Client, call: &PendingCall) -> Result<RunOutcome, End> {
    loop {
        match client.next(call, None) {
            Next::Event(Event::Data(channel, body, range)) => {
                write_out(channel, body.get(range).unwrap_or_default());
            }
            Next::Event(Event::Reply(Ok(Reply::Run(outcome)))) => {
                write_out(CH_STDOUT, &outcome.stdout);
                write_out(CH_STDERR, &outcome.stderr);
                return Ok(outcome);
            }
            Next::Event(Event::Reply(Ok(other))) => {
                return Err(End::Failed(Failure::other(
                    FailureKind::Internal,
                    format!("the agent answered run with {other:?}"),
                )))
            }
            Next::Event(Event::Reply(Err(failure))) => return Err(End::Failed(failure)),
            Next::Interrupted => return Err(End::Interrupted),
            Next::Closed | Next::Timeout => return Err(End::Closed),
        }
    }
}

/// Writes guest output to our stdout or stderr. A closed stdout ends us
/// with SIGPIPE, as it would any other command in a pipeline (`main`
/// restores the default disposition).
fn write_out(channel: u8, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let _ = if channel == CH_STDERR {
        let mut e = std::io::stderr().lock();
        e.write_all(bytes).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(bytes).and_then(|()| o.flush())
    };
}

/// Sends our stdin to the command in chunks, on a thread of its own, until
/// end of file (then the command's stdin is closed). A command that ends
/// first ends the process, and this thread with it.
fn feed_stdin(client: Arc<Client>, id: provium_protocol::RequestId) {
    let feeder = client.clone();
    let spawned = std::thread::Builder::new()
        .name("provium-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; CHUNK_LEN];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if feeder.send_data(id, &buf[..n], false).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!(
                            "provium: reading stdin failed ({e}); closing the command's stdin"
                        );
                        break;
                    }
                }
            }
            let _ = feeder.send_data(id, &[], true);
        });
    if let Err(e) = spawned {
        eprintln!("provium: cannot start the stdin thread ({e}); the command gets no stdin");
        let _ = client.send_data(id, &[], true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn statuses_become_exit_codes() {
        assert_eq!(status_code(ExitStatus::Exited(0)), Some(0));
        assert_eq!(status_code(ExitStatus::Exited(3)), Some(3));
        assert_eq!(status_code(ExitStatus::Signalled(9)), Some(137));
        assert_eq!(status_code(ExitStatus::TimedOut), None);
        let enoent = Failure::os(libc::ENOENT, "No such file or directory");
        assert_eq!(refusal_code(&enoent), 127);
        assert_eq!(
            refusal_code(&Failure::os(libc::EACCES, "Permission denied")),
            126
        );
        assert_eq!(refusal_code(&Failure::os(libc::EIO, "I/O error")), 125);
        assert_eq!(
            refusal_code(&Failure::other(FailureKind::BadRequest, "x")),
            125
        );
        let timed_out = RunError::TimedOut {
            program: "sleep".into(),
            secs: 1.0,
        };
        assert_eq!(timed_out.exit_code(), 124);
        assert_eq!(RunError::Interrupted.exit_code(), 130);
        assert_eq!(
            timed_out.to_string(),
            "sleep did not finish within 1 s (--timeout): its process group was killed"
        );
    }

    #[test]
    fn the_spec_carries_argv_env_cwd_and_timeout_verbatim() {
        let cli = crate::cli::Cli::parse_from([
            "provium", "run", "-e", "A=1", "-w", "/tmp", "-t", "2", "--", "printf", "%s\\n", "a b",
            "",
        ]);
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let s = spec(&args, true);
        assert_eq!(s.program, b"printf");
        assert_eq!(
            s.args,
            [&b"%s\\n"[..], b"a b", b""].map(|a| ByteBuf::from(a.to_vec()))
        );
        assert_eq!(
            s.env,
            [(ByteBuf::from(&b"A"[..]), ByteBuf::from(&b"1"[..]))]
        );
        assert_eq!(s.cwd.as_deref().map(|c| &c[..]), Some(&b"/tmp"[..]));
        assert_eq!(s.timeout_ms, Some(2000));
        assert!(s.stdin_more && s.stdin.is_empty());
        assert!(!spec(&args, false).stdin_more);
    }
}
