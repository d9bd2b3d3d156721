//! `provium-agent`: PID 1 and op server of provium guests.
//!
//! ```text
//! provium-agent                 as PID 1: init mode (mounts, modules, ...,
//!                               then forks the op server)
//! provium-agent --server        op server only (transport from /proc/cmdline)
//! provium-agent --serve-stdio   serve one connection on stdin/stdout
//! provium-agent --serve-fd N    serve one connection on descriptor N
//! provium-agent --worker-fd N   worker mode: serve the parent agent's
//!                               channel on descriptor N (see `worker`)
//! provium-agent --version
//! provium-agent --bench-stat PATH N
//!                               the guest's own cost of the Stat op: runs
//!                               the agent's stat of PATH N times, prints
//!                               the nanoseconds per call (bench/batch.lua)
//! provium-agent --bench-batch PATH N
//!                               the guest's own cost of a batch entry: runs
//!                               a batch of N stats of PATH as the op server
//!                               does (decode, stat, encode the reply) without
//!                               a transport, prints the nanoseconds per entry
//!                               of the best of three runs and of the first
//! ```
//! `PROVIUM_AGENT_DEBUG=1` turns on debug logging in the developer modes.

use std::ffi::OsString;
use std::process::ExitCode;

use provium_agent::config::Config;
use provium_agent::server::{self, ServerEnv};
use provium_agent::{init, log, worker};

const USAGE: &str =
    "usage: provium-agent [--server | --serve-stdio | --serve-fd N | --worker-fd N | --version
                     | --bench-stat PATH N | --bench-batch PATH N]
(without arguments it must be PID 1)";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    if std::env::var_os("PROVIUM_AGENT_DEBUG").is_some_and(|v| v == "1") {
        log::set_debug(true);
    }
    match args.as_slice() {
        [] if rustix::process::getpid().is_init() => init::run(),
        ["--server"] => {
            let cfg = Config::load();
            if cfg.debug {
                log::set_debug(true);
            }
            server::run(&cfg, &ServerEnv::default())
        }
        ["--serve-stdio"] => serve(0, 1),
        ["--serve-fd", fd] => match fd.parse::<i32>() {
            Ok(fd) if fd >= 0 => serve(fd, fd),
            _ => usage(),
        },
        ["--worker-fd", fd] => match fd.parse::<i32>() {
            Ok(fd) if fd > 2 => worker::child::serve_channel(fd),
            _ => usage(),
        },
        ["--bench-stat", path, n] => match n.parse::<u32>() {
            Ok(n) if n > 0 => bench_stat(path, n),
            _ => usage(),
        },
        ["--bench-batch", path, n] => match n.parse::<u32>() {
            Ok(n) if n > 0 => bench_batch(path, n),
            _ => usage(),
        },
        ["--version"] => {
            server::print(concat!("provium-agent ", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

fn serve(read_fd: i32, write_fd: i32) -> ExitCode {
    let fds = server::dup_fd(read_fd).and_then(|r| Ok((r, server::dup_fd(write_fd)?)));
    match fds {
        Ok((r, w)) => server::serve_fds(r, w),
        Err(e) => {
            provium_agent::log!("bad descriptor: {e}");
            ExitCode::from(2)
        }
    }
}

/// Times `n` runs of the agent's own Stat op (the syscall and the reply it
/// builds, as a batch entry runs it) on `path`.
fn bench_stat(path: &str, n: u32) -> ExitCode {
    let start = std::time::Instant::now();
    for _ in 0..n {
        if let Err(e) = provium_agent::ops::fs::stat(path.as_bytes(), true) {
            provium_agent::log!("stat {path}: {e:?}");
            return ExitCode::FAILURE;
        }
    }
    let ns = start.elapsed().as_nanos() / u128::from(n);
    server::print(&format!("{ns}"));
    ExitCode::SUCCESS
}

/// Times a batch of `n` stats of `path`, run as the op server runs one
/// (decoded from the call frame's op list, each result encoded into the
/// reply frame), without a transport, three times in this new process:
/// prints the nanoseconds per entry of the best run and of the first.
fn bench_batch(path: &str, n: u32) -> ExitCode {
    use provium_protocol::Op;
    if let Err(e) = provium_agent::ops::fs::stat(path.as_bytes(), true) {
        provium_agent::log!("stat {path}: {e:?}");
        return ExitCode::FAILURE;
    }
    let stat = Op::Stat {
        path: path.as_bytes().to_vec(),
        follow: true,
    };
    let ops = match postcard::to_allocvec(&(vec![stat; n as usize])) {
        Ok(ops) => ops,
        Err(e) => {
            provium_agent::log!("cannot encode the op list: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut runs = Vec::with_capacity(3);
    for _ in 0..3 {
        let start = std::time::Instant::now();
        if let Err(e) = provium_agent::ops::batch::run_list(&ops) {
            provium_agent::log!("batch of stats of {path}: {e:?}");
            return ExitCode::FAILURE;
        }
        runs.push(start.elapsed().as_nanos() / u128::from(n));
    }
    let best = runs.iter().min().copied().unwrap_or_default();
    let first = runs.first().copied().unwrap_or_default();
    server::print(&format!("{best} {first}"));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{USAGE}\n").as_bytes());
    ExitCode::from(2)
}
