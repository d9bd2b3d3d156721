//! `scripts/host-matrix`: runs a command, the smoke or the whole busted suite
//! on a chosen host kind — KVM and kernel vhost-vsock included, made here
//! by a nested L1 guest on machines that have neither.
//!
//! ```text
//! host-matrix [--kind KIND] [--timeout SECS] [--memory MIB] -- COMMAND [ARG...]
//! host-matrix --smoke [--kinds KIND,KIND...]
//! host-matrix --full [--kind KIND]
//! host-matrix --list
//! ```
//!
//! The command's output is streamed with an `L1:` prefix (`L0:` on this
//! machine, kind `tcg-vhost-user`); the exit status is the command's. QEMU,
//! virtiofsd and the temporary directory are gone when it returns, also on
//! Ctrl-C or SIGTERM.

mod kind;
mod l1;
mod run;
mod smoke;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use kind::Kind;

/// Exit status for usage errors.
const USAGE_EXIT: u8 = 2;
/// Exit status when the run itself failed (no status from the command).
const FAILED_EXIT: u8 = 125;

const USAGE: &str = "usage:
  scripts/host-matrix [--kind KIND] [--timeout SECS] [--memory MIB] -- COMMAND [ARG...]
  scripts/host-matrix --smoke [--kinds KIND,KIND...]
  scripts/host-matrix --full [--kind KIND] [--timeout SECS]
  scripts/host-matrix --list
kinds: kvm-kernel-vsock (default), kvm-vhost-user, tcg-kernel-vsock (nested L1 guests),
       tcg-vhost-user (this machine)";

/// What to do.
#[derive(Debug, PartialEq)]
enum Mode {
    Command(Vec<String>),
    Smoke(Vec<Kind>),
    Full,
    List,
}

#[derive(Debug, PartialEq)]
struct Args {
    mode: Mode,
    kind: Kind,
    timeout: Option<Duration>,
    memory_mib: u64,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut kind = Kind::KvmKernelVsock;
    let mut timeout = None;
    let mut memory_mib = 4096;
    let mut mode = None;
    let mut kinds: Option<Vec<Kind>> = None;
    let mut it = argv.iter();
    let value = |it: &mut std::slice::Iter<String>, flag: &str| {
        it.next()
            .cloned()
            .ok_or_else(|| format!("{flag} needs a value"))
    };
    let parse_kind = |s: &str| Kind::parse(s).ok_or_else(|| format!("unknown host kind {s:?}"));
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kind" => kind = parse_kind(&value(&mut it, a)?)?,
            "--kinds" => {
                kinds = Some(
                    value(&mut it, a)?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(parse_kind)
                        .collect::<Result<_, _>>()?,
                )
            }
            "--timeout" => {
                let v = value(&mut it, a)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        format!("--timeout must be a positive number of seconds (got {v:?})")
                    })?;
                timeout = Some(Duration::from_secs_f64(secs));
            }
            "--memory" => {
                let v = value(&mut it, a)?;
                memory_mib = v.parse().ok().filter(|m| *m >= 1024).ok_or_else(|| {
                    format!("--memory must be a number of MiB >= 1024 (got {v:?})")
                })?;
            }
            "--smoke" => mode = Some(Mode::Smoke(Vec::new())),
            "--full" => mode = Some(Mode::Full),
            "--list" => mode = Some(Mode::List),
            "-h" | "--help" => return Err(String::new()),
            "--" => {
                let rest: Vec<String> = it.by_ref().cloned().collect();
                if rest.is_empty() {
                    return Err("no command after --".into());
                }
                if mode.is_some() {
                    return Err(
                        "a command cannot be combined with --smoke, --full or --list".into(),
                    );
                }
                mode = Some(Mode::Command(rest));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mode = match (mode, kinds) {
        (Some(Mode::Smoke(_)), Some(k)) if !k.is_empty() => Mode::Smoke(k),
        (Some(Mode::Smoke(_)), _) => Mode::Smoke(kind::ALL.to_vec()),
        (_, Some(_)) => return Err("--kinds goes with --smoke".into()),
        (Some(m), None) => m,
        (None, None) => {
            return Err("nothing to do: give --smoke, --full, --list or -- COMMAND".into())
        }
    };
    Ok(Args {
        mode,
        kind,
        timeout,
        memory_mib,
    })
}

/// The repository (the wrapper script sets it; else the working directory).
fn repo() -> PathBuf {
    std::env::var_os("PROVIUM_REPO")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("host-matrix: {e}\n{USAGE}");
            return ExitCode::from(USAGE_EXIT);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("host-matrix: cannot handle signal {sig}: {e}");
            return ExitCode::from(FAILED_EXIT);
        }
    }
    match args.mode {
        Mode::List => {
            for k in kind::ALL {
                println!(
                    "{}\t{}",
                    k,
                    if k.nested() {
                        "nested L1 guest"
                    } else {
                        "this machine"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Mode::Smoke(kinds) => smoke::run(&kinds, &repo(), args.memory_mib, args.timeout, &stop),
        Mode::Full => {
            let job = l1::Job {
                kind: args.kind,
                command: vec![
                    "busted".into(),
                    "--output=spec/support/summary.lua".into(),
                    "spec/".into(),
                ],
                cwd: repo(),
                env: Vec::new(),
                timeout: args.timeout.unwrap_or(Duration::from_secs(3600)),
                memory_mib: args.memory_mib,
            };
            finish(&job, l1::run(&job, &stop))
        }
        Mode::Command(command) => {
            let job = l1::Job {
                kind: args.kind,
                command,
                cwd: std::env::current_dir().unwrap_or_else(|_| repo()),
                env: Vec::new(),
                timeout: args.timeout.unwrap_or(Duration::from_secs(3600)),
                memory_mib: args.memory_mib,
            };
            finish(&job, l1::run(&job, &stop))
        }
    }
}

/// Reports a job's end; the exit status is the command's.
fn finish(job: &l1::Job, r: Result<l1::Outcome, run::RunError>) -> ExitCode {
    match r {
        Ok(o) => {
            eprintln!(
                "host-matrix: {}: exit status {} after {:.1} s",
                job.kind, o.exit, o.seconds
            );
            ExitCode::from(u8::try_from(o.exit).unwrap_or(FAILED_EXIT))
        }
        Err(e) => {
            eprintln!("host-matrix: {}: {e}", job.kind);
            ExitCode::from(FAILED_EXIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn a_command_after_the_separator() {
        let a = args("--kind tcg-kernel-vsock -- lua5.4 -v").expect("parses");
        assert_eq!(a.kind, Kind::TcgKernelVsock);
        assert_eq!(a.mode, Mode::Command(vec!["lua5.4".into(), "-v".into()]));
    }

    #[test]
    fn smoke_defaults_to_every_kind() {
        assert_eq!(
            args("--smoke").expect("parses").mode,
            Mode::Smoke(kind::ALL.to_vec())
        );
        assert_eq!(
            args("--smoke --kinds kvm-vhost-user").expect("parses").mode,
            Mode::Smoke(vec![Kind::KvmVhostUser])
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        for (argv, says) in [
            ("", "nothing to do"),
            ("--kind kvm --smoke", "unknown host kind"),
            ("--timeout -1 --full", "--timeout"),
            ("--memory 12 --full", "--memory"),
            ("--kinds kvm-vhost-user --full", "--kinds"),
            ("--smoke -- ls", "cannot be combined"),
            ("--", "no command"),
        ] {
            let err = args(argv).expect_err(argv);
            assert!(err.contains(says), "{argv:?}: {err}");
        }
    }
}
