//! `--smoke`: `scripts/host-smoke.lua` on every chosen host kind, then a
//! summary table (boot and restore times per kind).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::kind::Kind;
use crate::l1::{self, Job};

/// The smoke script, relative to the repository.
const SCRIPT: &str = "scripts/host-smoke.lua";

/// A run's deadline by kind: nested TCG boots take ~50-75 s each.
fn timeout(kind: Kind) -> Duration {
    Duration::from_secs(match kind {
        Kind::TcgKernelVsock => 1200,
        Kind::KvmKernelVsock | Kind::KvmVhostUser => 600,
        Kind::TcgVhostUser => 300,
    })
}

/// Boot timeout inside the smoke (seconds): nested TCG is slow.
fn boot_timeout(kind: Kind) -> u32 {
    match kind {
        Kind::TcgKernelVsock => 400,
        _ => 120,
    }
}

/// One kind's result.
struct Row {
    kind: Kind,
    ok: bool,
    fields: BTreeMap<String, String>,
    note: String,
    seconds: f64,
}

/// Runs the smoke on `kinds`; success only if every kind passed.
pub fn run(
    kinds: &[Kind],
    repo: &Path,
    memory_mib: u64,
    timeout_override: Option<Duration>,
    stop: &Arc<AtomicBool>,
) -> ExitCode {
    let mut rows = Vec::new();
    for &kind in kinds {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        eprintln!("host-matrix: == smoke on {kind} ==");
        // A fresh fixture cache per kind, so the fixture is built there and
        // then reused. In L1, /tmp is the L1's own tmpfs.
        let scratch = match (!kind.nested())
            .then(|| tempfile::Builder::new().prefix("provium-smoke-").tempdir())
        {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                eprintln!("host-matrix: cannot create a temporary directory: {e}");
                return ExitCode::from(125);
            }
            None => None,
        };
        let cache = match &scratch {
            Some(d) => d.path().join("fixtures").display().to_string(),
            None => "/tmp/host-matrix-fixtures".to_string(),
        };
        let job = Job {
            kind,
            command: vec!["lua5.4".into(), repo.join(SCRIPT).display().to_string()],
            cwd: repo.to_path_buf(),
            env: {
                let mut env = vec![
                    ("PROVIUM_FIXTURE_CACHE".into(), cache),
                    (
                        "PROVIUM_SMOKE_BOOT_TIMEOUT".into(),
                        boot_timeout(kind).to_string(),
                    ),
                ];
                // A nested host must be detected as its kind; this machine
                // is whatever it is (a KVM workstation runs its own kind).
                if kind.nested() {
                    env.push(("PROVIUM_SMOKE_KIND".into(), kind.name().into()));
                }
                env
            },
            timeout: timeout_override.unwrap_or(timeout(kind)),
            memory_mib,
        };
        let row = match l1::run(&job, stop) {
            Ok(o) => {
                let fields = o
                    .summaries
                    .last()
                    .map(|s| parse_fields(s))
                    .unwrap_or_default();
                let note = if o.summaries.is_empty() {
                    "no summary line".to_string()
                } else {
                    String::new()
                };
                Row {
                    kind,
                    ok: o.exit == 0 && !o.summaries.is_empty(),
                    fields,
                    note: if o.exit != 0 {
                        format!("exit status {}", o.exit)
                    } else {
                        note
                    },
                    seconds: o.seconds,
                }
            }
            Err(e) => Row {
                kind,
                ok: false,
                fields: BTreeMap::new(),
                note: e.to_string(),
                seconds: 0.0,
            },
        };
        eprintln!(
            "host-matrix: {kind}: {}",
            if row.ok { "passed" } else { "FAILED" }
        );
        rows.push(row);
    }
    print_table(&rows);
    if rows.len() == kinds.len() && rows.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `key=value key=value` → map.
fn parse_fields(s: &str) -> BTreeMap<String, String> {
    s.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn print_table(rows: &[Row]) {
    let get = |r: &Row, k: &str| r.fields.get(k).cloned().unwrap_or_else(|| "-".into());
    println!();
    println!("host-matrix smoke summary (nested kinds run in an L1 guest under TCG: their times are nested times)");
    println!(
        "{:<30} {:<7} {:<14} {:>6} {:>7} {:>9} {:>10} {:>10} {:>8}  note",
        "kind",
        "result",
        "accel/vsock",
        "passed",
        "boot",
        "snapshot",
        "rollback",
        "restore",
        "total"
    );
    for r in rows {
        let name = if r.kind.nested() {
            r.kind.name().to_string()
        } else {
            format!("this machine ({})", get(r, "kind"))
        };
        println!(
            "{:<30} {:<7} {:<14} {:>6} {:>7} {:>9} {:>10} {:>10} {:>7.0}s  {}",
            name,
            if r.ok { "ok" } else { "FAILED" },
            format!("{}/{}", get(r, "accel"), get(r, "vsock")),
            format!("{}/{}", get(r, "passed"), {
                let p: u32 = get(r, "passed").parse().unwrap_or(0);
                let f: u32 = get(r, "failed").parse().unwrap_or(0);
                p + f
            }),
            get(r, "boot"),
            get(r, "snapshot"),
            get(r, "rollback"),
            get(r, "restore"),
            r.seconds,
            r.note
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_fields() {
        let f = parse_fields("kind=kvm-kernel-vsock boot=5.2s passed=9 failed=0");
        assert_eq!(f["boot"], "5.2s");
        assert_eq!(f["failed"], "0");
        assert_eq!(f.len(), 4);
    }
}
