//! The command line: subcommands, options and their checks (clap derive).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::defaults::{self, exit};
use crate::fmt;

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 failure (the message says what failed and how to fix it),
2 usage error. `provium run` exits with the guest command's status instead.

Environment: PROVIUM_LOG (log filter), PROVIUM_ACCEL=kvm|tcg, PROVIUM_VSOCK=kernel|vhost-user,
PROVIUM_QEMU, PROVIUM_CONFIG (profiles), XDG_CACHE_HOME (caches), PROVIUM_FIXTURE_CACHE,
PROVIUM_FIXTURE_REMOTE (the remote fixture store).";

/// Boot real Linux guests under QEMU: run commands and shells in them, check
/// the host, manage provium's caches.
#[derive(Debug, Parser)]
#[command(name = "provium", version, propagate_version = true, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this host can boot guests, and say how to fix what is missing
    #[command(after_help = "\
One line per check: `ok`, `warn` (works, with a fix for what is degraded),
`FAIL` (the default guest cannot boot; the fix follows) or `skip`.
Exits 1 when a check failed, else 0.")]
    Doctor(DoctorArgs),
    /// Boot a guest, run one command in it, exit with the command's status
    #[command(after_help = "\
The command runs directly (PATH lookup, no shell): write `sh -c '...'` for pipes
and other shell syntax. Its stdout and stderr go to provium's; provium's stdin is
sent to it when stdin is not a terminal (-n: never). The guest is killed when the
command ends.

Exit status: the command's; 128+N when signal N killed it; 124 when --timeout
killed it; 126 when the program cannot be executed, 127 when it does not exist
in the guest; 125 when provium itself failed (the guest did not boot or died;
the message on stderr says why); 130 on Ctrl-C.

Examples:
  provium run -- uname -r
  provium run --memory 1G -- sh -c 'free -m | head -2'
  tar c src | provium run -- tar tv")]
    Run(RunArgs),
    /// Boot a guest and open an interactive shell on it
    #[command(after_help = "\
The shell (BusyBox sh, job control, Ctrl-C and Ctrl-Z go to the guest) runs on
the guest's console port /dev/hvc0; the window size follows the terminal's.
Leave with `exit` (provium exits with the shell's status) or Ctrl-] (exit 1).
The guest is killed on every way out, also when the terminal closes.")]
    Shell(ShellArgs),
    /// Build, list and garbage-collect the guest image cache
    #[command(subcommand)]
    Image(ImageCommand),
    /// The fixture cache (`provium.vm_fixture` snapshots) and its remote store
    #[command(subcommand)]
    Fixtures(FixturesCommand),
    /// Print the spec files of one shard of a suite, for parallel CI runners
    #[command(after_help = "\
Spec files are the *_spec.lua files under the given directories and the files
named directly. Every runner given the same files (and durations) computes the
same split: together the shards run each file exactly once. With --durations
(lines of `seconds path`), the longest files are placed first, each on the shard
with the least time so far; without, every file counts the same. Every runner
must read the same durations file. `busted --helper=provium.durations spec/`
records them (into $PROVIUM_DURATIONS, else .provium-durations).

Examples:
  busted $(provium shard --total 4 --index \"$MATRIX_INDEX\" spec/)
  busted $(provium shard --total 8 --index \"$JOB_COMPLETION_INDEX\" spec/)")]
    Shard(ShardArgs),
}

#[derive(Debug, Args)]
pub struct ShardArgs {
    /// How many shards the suite is split into
    #[arg(long, value_name = "N")]
    pub total: usize,
    /// Which shard to print, from 0 to N-1
    #[arg(long, value_name = "I")]
    pub index: usize,
    /// Recorded durations: lines of `seconds path`
    #[arg(long, value_name = "FILE")]
    pub durations: Option<std::path::PathBuf>,
    /// Spec directories and files
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also boot the default guest and run `uname -r` in it, timed
    #[arg(long)]
    pub boot: bool,
}

/// How the host reaches the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// virtio-vsock (kernel vhost-vsock, or vhost-device-vsock)
    Vsock,
    /// a virtio-serial port
    Serial,
}

/// Options of the guest that `run` and `shell` boot.
#[derive(Debug, Clone, Args)]
pub struct VmArgs {
    /// Guest memory, e.g. 512M or 2G [default: 256M, or the profile's]
    #[arg(short, long, value_name = "SIZE", value_parser = parse_memory_mib)]
    pub memory: Option<u64>,
    /// Virtual CPUs [default: 1, or the profile's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=defaults::MAX_CPUS as i64))]
    pub cpus: Option<u32>,
    /// How the host reaches the guest agent [default: this host's, see `provium doctor`]
    #[arg(long, value_enum)]
    pub transport: Option<TransportArg>,
    /// Seconds the guest may take to boot
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    pub boot_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The profile to boot: `default` (provium's guest) or one of provium.toml
    #[arg(default_value = defaults::DEFAULT_PROFILE)]
    pub profile: String,
    #[command(flatten)]
    pub vm: VmArgs,
    /// Kill the command (its whole process group) after SECS seconds; exit 124
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Set a variable in the command's environment (repeatable)
    #[arg(short, long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<EnvVar>,
    /// The command's working directory in the guest
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<OsString>,
    /// Never send provium's stdin to the command
    #[arg(short = 'n', long)]
    pub no_stdin: bool,
    /// The program and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The profile to boot: `default` (provium's guest) or one of provium.toml
    #[arg(default_value = defaults::DEFAULT_PROFILE)]
    pub profile: String,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the default guest image, or find it in the cache
    Build,
    /// List the cached images: key, kernel, size, last use
    List,
    /// Remove all images but the current default and the most recently used
    #[command(after_help = "\
Images some process uses right now (a running test suite, a shell) are never
removed. Builders also remove old images on their own, keeping the four most
recently used besides the new one.")]
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// How many images to keep besides the current default (the most recently used)
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_KEEP)]
    pub keep: usize,
    /// Only say what would be removed
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// List the cached fixtures, least recently used first
    List,
    /// Remove every cached fixture not in use
    Clean,
    /// Print the fixture cache directory
    Dir,
    /// Push cached fixtures to the remote store (those it lacks, made here)
    #[command(after_help = "\
Pushes every cached fixture (or the KEYs) that the store lacks and that was
made with this provium's protocol on this host's default guest image: others
could not be restored by a machine like this one, and are skipped. Without
--remote, the store is $PROVIUM_FIXTURE_REMOTE, else `remote` in the
[fixtures] table of provium.toml. Credentials: $PROVIUM_FIXTURE_REMOTE_TOKEN,
$PROVIUM_FIXTURE_REMOTE_USER with _PASSWORD, or Docker's config.json.
Exits 1 when a push failed (the others are still made).

Example:
  provium fixtures push --remote oci://registry.example:5000/team/fixtures")]
    Push(PushArgs),
    /// Pull the remote store's fixtures for this host into the cache
    #[command(after_help = "\
Pulls every fixture of the store (or the KEYs) that the cache lacks and that
was made with this provium's protocol on this host's default guest image:
exactly those `provium.vm_fixture` could restore here. Each is checked as a
lazy pull is (digests, sizes, the snapshot loads) before it enters the cache.
Exits 1 when a pull failed (the others are still made).

Example (warm a CI runner's cache before the suite):
  provium fixtures pull && busted spec/")]
    Pull(PullArgs),
    /// Delete stale fixtures from the remote store
    #[command(after_help = "\
Deletes the store's fixtures that no provium from now on can use: made with
an older protocol than this provium's, or with an unreadable config. With
--older-than AGE (30d, 12h, 90m, 2w; 0s for all), also every fixture pushed
longer ago than AGE; one still in use is rebuilt and pushed again by the
next runner that misses it. Artifacts that are not provium fixtures are
never touched. The registry frees the space in its garbage collection
(`registry garbage-collect` for Docker's registry, which must allow deletes:
REGISTRY_STORAGE_DELETE_ENABLED=true).

Examples:
  provium fixtures prune --older-than 30d --dry-run
  provium fixtures prune --older-than 30d")]
    Prune(PruneArgs),
}

/// Where the remote fixture store is.
#[derive(Debug, Args)]
pub struct RemoteArg {
    /// The store, oci://host[:port]/repository (oci+http:// without TLS)
    /// [default: $PROVIUM_FIXTURE_REMOTE, else provium.toml's]
    #[arg(long, value_name = "LOCATION")]
    pub remote: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub remote: RemoteArg,
    /// Only these fixtures: keys, or their first digits as `list` shows them
    #[arg(value_name = "KEY", value_parser = parse_key_prefix)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub remote: RemoteArg,
    /// Only these fixtures: keys, or their first digits
    #[arg(value_name = "KEY", value_parser = parse_key_prefix)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub remote: RemoteArg,
    /// Also delete fixtures pushed longer ago than AGE (30d, 12h, 90m, 2w)
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Only say what would be deleted
    #[arg(long)]
    pub dry_run: bool,
}

/// A fixture key or its first hex digits (at least 4).
pub fn parse_key_prefix(text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase();
    if t.len() < 4 || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a fixture key: give 4 to 64 of its hex digits, \
             as `provium fixtures list` shows them"
        ));
    }
    Ok(t)
}

/// An age like `30d` (see [`fmt::parse_age`]).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    fmt::parse_age(text).ok_or_else(|| {
        format!("{text:?} is not an age: give a whole number and s, m, h, d or w, like 30d")
    })
}

/// A `NAME=VALUE` of `--env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: OsString,
    pub value: OsString,
}

/// `512M` → 512 (MiB), at least [`defaults::MIN_MEMORY_MIB`].
pub fn parse_memory_mib(text: &str) -> Result<u64, String> {
    let bytes =
        fmt::parse_size(text).ok_or_else(|| format!("{text:?} is not a size like 512M or 2G"))?;
    let mib = bytes.div_ceil(1 << 20);
    if mib < defaults::MIN_MEMORY_MIB {
        return Err(format!(
            "a guest needs at least {}M (got {text})",
            defaults::MIN_MEMORY_MIB
        ));
    }
    Ok(mib)
}

/// A positive, finite number of seconds (fractions allowed).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{text:?}: give a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} seconds is too long"))
}

/// `NAME=VALUE` with a non-empty name.
pub fn parse_env(text: &str) -> Result<EnvVar, String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok(EnvVar {
            name: name.into(),
            value: value.into(),
        }),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

impl RunArgs {
    /// The program (the first word of the command).
    pub fn program(&self) -> &[u8] {
        self.command
            .first()
            .map(|p| p.as_bytes())
            .unwrap_or_default()
    }
}

/// Parses `args` (the first is the program name); `Err` carries clap's
/// message and the exit code to leave with (0 for `--help`/`--version`).
pub fn parse<I, T>(args: I) -> Result<Cli, (clap::Error, i32)>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| {
        let code = if e.use_stderr() {
            exit::USAGE
        } else {
            exit::SUCCESS
        };
        (e, code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(args: &[&str]) -> Command {
        let mut all = vec!["provium"];
        all.extend_from_slice(args);
        match parse(all) {
            Ok(cli) => cli.command,
            Err((e, _)) => panic!("{args:?}: {e}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        let mut all = vec!["provium"];
        all.extend_from_slice(args);
        match parse(all) {
            Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
            Err((e, code)) => {
                assert_eq!(code, exit::USAGE, "{args:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_an_optional_profile_and_the_command_after_the_dashes() {
        let Command::Run(r) = ok(&["run", "--", "uname", "-r"]) else {
            panic!("not run")
        };
        assert_eq!(r.profile, "default");
        assert_eq!(r.command, ["uname", "-r"]);
        assert_eq!(r.program(), b"uname");
        assert!(!r.no_stdin && r.timeout.is_none() && r.vm.memory.is_none());
        assert_eq!(r.vm.boot_timeout, Duration::from_secs(60));

        let Command::Run(r) = ok(&[
            "run",
            "mine",
            "-m",
            "1G",
            "--cpus",
            "2",
            "-t",
            "1.5",
            "-e",
            "A=b=c",
            "-w",
            "/tmp",
            "-n",
            "--transport",
            "serial",
            "--",
            "sh",
            "-c",
            "echo $A",
        ]) else {
            panic!("not run")
        };
        assert_eq!(r.profile, "mine");
        assert_eq!(r.vm.memory, Some(1024));
        assert_eq!(r.vm.cpus, Some(2));
        assert_eq!(r.vm.transport, Some(TransportArg::Serial));
        assert_eq!(r.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            r.env,
            [EnvVar {
                name: "A".into(),
                value: "b=c".into()
            }]
        );
        assert_eq!(r.workdir.as_deref(), Some(std::ffi::OsStr::new("/tmp")));
        assert!(r.no_stdin);
        assert_eq!(r.command, ["sh", "-c", "echo $A"]);
    }

    #[test]
    fn bad_run_arguments_are_usage_errors_naming_the_problem() {
        assert!(usage_error(&["run"]).contains("<CMD>"));
        assert!(usage_error(&["run", "uname", "-r"]).contains("-r"));
        assert!(usage_error(&["run", "-m", "12", "--", "true"]).contains("at least 64M"));
        assert!(usage_error(&["run", "-m", "lots", "--", "true"]).contains("not a size"));
        assert!(usage_error(&["run", "--cpus", "0", "--", "true"]).contains("0"));
        assert!(usage_error(&["run", "--cpus", "65", "--", "true"]).contains("65"));
        assert!(usage_error(&["run", "-t", "0", "--", "true"]).contains("positive"));
        assert!(usage_error(&["run", "-t", "-1", "--", "true"]).contains("-1"));
        assert!(usage_error(&["run", "-t", "nan", "--", "true"]).contains("positive"));
        assert!(usage_error(&["run", "-e", "=x", "--", "true"]).contains("NAME=VALUE"));
        assert!(usage_error(&["run", "--transport", "pigeon", "--", "true"]).contains("pigeon"));
        assert!(usage_error(&["frobnicate"]).contains("frobnicate"));
    }

    #[test]
    fn the_other_subcommands() {
        assert!(matches!(
            ok(&["doctor"]),
            Command::Doctor(DoctorArgs { boot: false })
        ));
        assert!(matches!(
            ok(&["doctor", "--boot"]),
            Command::Doctor(DoctorArgs { boot: true })
        ));
        let Command::Shell(s) = ok(&["shell"]) else {
            panic!("not shell")
        };
        assert_eq!(s.profile, "default");
        assert!(matches!(
            ok(&["image", "build"]),
            Command::Image(ImageCommand::Build)
        ));
        assert!(matches!(
            ok(&["image", "list"]),
            Command::Image(ImageCommand::List)
        ));
        let Command::Image(ImageCommand::Gc(gc)) = ok(&["image", "gc"]) else {
            panic!("not gc")
        };
        assert_eq!(gc.keep, defaults::DEFAULT_KEEP);
        assert!(!gc.dry_run);
        let Command::Image(ImageCommand::Gc(gc)) = ok(&["image", "gc", "--keep", "0", "--dry-run"])
        else {
            panic!("not gc")
        };
        assert_eq!((gc.keep, gc.dry_run), (0, true));
        assert!(usage_error(&["image", "gc", "--keep", "-1"]).contains("-1"));
        assert!(usage_error(&["image"]).contains("Usage"));
        for sub in ["list", "clean", "dir"] {
            assert!(matches!(ok(&["fixtures", sub]), Command::Fixtures(_)));
        }
    }

    #[test]
    fn help_and_version_exit_zero() {
        for args in [
            vec!["provium", "--help"],
            vec!["provium", "--version"],
            vec!["provium", "run", "--help"],
            vec!["provium", "shell", "-h"],
            vec!["provium", "image", "gc", "--help"],
            vec!["provium", "fixtures", "--help"],
            vec!["provium", "doctor", "--version"],
        ] {
            match parse(args.clone()) {
                Ok(_) => panic!("{args:?} parsed"),
                Err((e, code)) => assert_eq!(code, exit::SUCCESS, "{args:?}: {e}"),
            }
        }
    }
}
