//! What the first process started by `run` may need before it runs: a path
//! (syslogd's socket, so `logger` works from the very first call). The first
//! `run` waits for it briefly; dialing the host does not, which keeps it off
//! the boot path.

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long the server waits for syslogd's socket before serving.
const SYSLOG_WAIT: Duration = Duration::from_millis(500);

/// Path the first `run` waits for.
static RUN_PREREQUISITE: OnceLock<PathBuf> = OnceLock::new();

/// Names the path the first `run` waits for (once per process).
pub fn set(path: PathBuf) {
    let _ = RUN_PREREQUISITE.set(path);
}

/// Waits, once per process and at most `SYSLOG_WAIT` (500 ms), for the
/// path [`set`] named.
pub fn await_run_prerequisite() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        if let Some(p) = RUN_PREREQUISITE.get() {
            wait_for_path(p, SYSLOG_WAIT);
        }
    });
}

/// Waits until `path` exists, at most `limit`.
fn wait_for_path(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() >= deadline {
            log!("{} did not appear within {limit:?}", path.display());
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}
