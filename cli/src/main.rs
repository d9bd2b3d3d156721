//! `provium`: the command-line face of the provium library.
//!
//! * `provium doctor` — what this host offers guests, and the fixes;
//! * `provium run [PROFILE] -- CMD...` — a command in a fresh guest;
//! * `provium shell [PROFILE]` — an interactive shell in a fresh guest;
//! * `provium image build|list|gc` — the guest image cache;
//! * `provium fixtures list|clean|dir` — the fixture cache;
//! * `provium fixtures push|pull|prune` — the remote fixture store;
//! * `provium shard` — the spec files of one shard of a suite.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error; `run` passes the
//! command's status through (see [`defaults::exit`]).

mod boot;
mod cli;
mod defaults;
mod doctor;
mod fixtures;
mod fmt;
mod image;
mod run;
mod shard;
mod share;
mod shell;
mod term;

use cli::{Command, FixturesCommand, ImageCommand};
use defaults::exit;

fn main() {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err((e, code)) => {
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if !matches!(cli.command, Command::Shell(_)) {
        // Output into a closed pipe (`provium image list | head -1`) ends
        // us quietly, as it would any other command. The shell keeps the
        // signal ignored: it must restore the terminal on every path.
        // SAFETY: sets a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Progress of long work (image builds) and warnings on stderr, as the
    // rock prints them; PROVIUM_LOG filters them.
    provium::log::init();
    let code = match &cli.command {
        Command::Doctor(args) => doctor::doctor(args),
        Command::Run(args) => match run::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("provium run: {e}");
                e.exit_code()
            }
        },
        Command::Shell(args) => match shell::shell(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("provium shell: {e}");
                e.exit_code()
            }
        },
        Command::Image(ImageCommand::Build) => done("image build", image::build()),
        Command::Image(ImageCommand::List) => done("image list", image::list()),
        Command::Image(ImageCommand::Gc(args)) => done("image gc", image::collect(args)),
        Command::Fixtures(FixturesCommand::List) => done("fixtures list", fixtures::list()),
        Command::Fixtures(FixturesCommand::Clean) => done("fixtures clean", fixtures::clean()),
        Command::Fixtures(FixturesCommand::Push(args)) => done("fixtures push", share::push(args)),
        Command::Fixtures(FixturesCommand::Pull(args)) => done("fixtures pull", share::pull(args)),
        Command::Fixtures(FixturesCommand::Prune(args)) => {
            done("fixtures prune", share::prune(args))
        }
        Command::Fixtures(FixturesCommand::Dir) => {
            fixtures::dir();
            exit::SUCCESS
        }
        Command::Shard(args) => done(
            "shard",
            shard::shard(
                &args.paths,
                args.total,
                args.index,
                args.durations.as_deref(),
            ),
        ),
    };
    std::process::exit(code);
}

/// The exit code of a command that yields one, saying why on failure.
fn report<E: std::fmt::Display>(what: &str, r: Result<i32, E>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provium {what}: {e}");
            exit::FAILURE
        }
    }
}

/// The exit code of a command that succeeds or fails.
fn done<E: std::fmt::Display>(what: &str, r: Result<(), E>) -> i32 {
    report(what, r.map(|()| exit::SUCCESS))
}
