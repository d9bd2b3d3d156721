//! Spare machines: a fixture's snapshot restored ahead of need.
//!
//! A suite that gives every spec a fresh VM from one fixture restores the
//! same snapshot again and again. After each such restore (asked for with
//! [`RestoreSpec::spare`]), the next copy starts restoring in the background
//! while the spec runs, and the next restore of that snapshot takes it: the
//! copy of the snapshot's RAM, QEMU's start and the device state load are
//! then off the spec's path (see BENCHMARKS.md, issue 12).
//!
//! A spare is an ordinary restored machine that nobody holds yet: one per
//! snapshot, never taken when the snapshot's files changed since it started
//! (a rebuilt fixture), killed with the process (`PR_SET_PDEATHSIG`) when
//! no restore takes it. `PROVIUM_SPARE=0` turns spares off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::task::JoinHandle;

use super::console::Console;
use super::snapshot;
use super::{Machine, RestoreSpec, VmError};

/// Turns spares off when set to `0`.
const SPARE_ENV: &str = "PROVIUM_SPARE";
/// Spares kept at once: a suite switching between fixtures keeps the last
/// ones; an older spare is killed (each is an idle VM, ~90 MiB).
const MAX_SPARES: usize = 2;

type Restored = Result<Machine, (VmError, Option<Arc<Console>>)>;

/// What a snapshot's files were when a spare started from them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    modified: Option<SystemTime>,
}

impl Identity {
    fn of(snapshot: &Path) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(snapshot::state_path(snapshot)).ok()?;
        Some(Identity {
            dev: m.dev(),
            ino: m.ino(),
            modified: m.modified().ok(),
        })
    }
}

struct Spare {
    identity: Identity,
    task: JoinHandle<Restored>,
    /// When it was started, in spares started by this process.
    serial: u64,
}

fn spares() -> &'static Mutex<HashMap<PathBuf, Spare>> {
    static SPARES: OnceLock<Mutex<HashMap<PathBuf, Spare>>> = OnceLock::new();
    SPARES.get_or_init(Default::default)
}

fn enabled() -> bool {
    std::env::var_os(SPARE_ENV).is_none_or(|v| v != "0")
}

/// The spare of `spec.snapshot`, renamed for `spec`, if one was started from
/// the snapshot as it is now and came up alive.
pub(super) async fn take(spec: &RestoreSpec) -> Option<Machine> {
    let spare = spares()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&spec.snapshot)?;
    if Identity::of(&spec.snapshot).as_ref() != Some(&spare.identity) {
        tracing::debug!(
            "spare of {} dropped: the snapshot changed",
            spec.snapshot.display()
        );
        spare.task.abort();
        return None;
    }
    match spare.task.await {
        Ok(Ok(mut m)) if m.dead_reason().is_none() => {
            m.rename(&spec.name);
            Some(m)
        }
        Ok(Ok(_)) => None,
        Ok(Err((e, _))) => {
            tracing::debug!("spare of {} failed: {e}", spec.snapshot.display());
            None
        }
        Err(e) => {
            tracing::debug!("spare of {} failed: {e}", spec.snapshot.display());
            None
        }
    }
}

/// Starts restoring the next copy of `spec.snapshot` in the background
/// (unless spares are off or one is already there).
pub(super) fn prepare(spec: &RestoreSpec) {
    if !enabled() {
        return;
    }
    let Some(identity) = Identity::of(&spec.snapshot) else {
        return;
    };
    let mut map = spares().lock().unwrap_or_else(|e| e.into_inner());
    if map.contains_key(&spec.snapshot) {
        return;
    }
    let next = RestoreSpec {
        name: format!("{} (spare)", spec.name),
        snapshot: spec.snapshot.clone(),
        timeout: spec.timeout,
        spare: false,
    };
    while map.len() >= MAX_SPARES {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, s)| s.serial)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        // Dropping the task's handle drops a finished machine, which kills
        // its QEMU; aborting an unfinished one drops its launch likewise.
        if let Some(old) = map.remove(&oldest) {
            old.task.abort();
        }
    }
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let task = tokio::spawn(Machine::restore_fresh(next));
    map.insert(
        spec.snapshot.clone(),
        Spare {
            identity,
            task,
            serial,
        },
    );
}
