//! The guest's serial console: QEMU writes it to a pipe, a task copies it into
//! a log file and keeps the newest bytes in memory for error messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Bytes of console output kept in memory.
const KEEP_BYTES: usize = 4 * 1024 * 1024;

/// Lines of console shown in error messages.
pub const TAIL_LINES: usize = 30;

/// A captured console.
pub struct Console {
    log: Mutex<Log>,
    /// Signalled whenever output arrives or the capture ends.
    grown: Condvar,
    path: PathBuf,
    grew: watch::Sender<u64>,
}

struct Log {
    bytes: Vec<u8>,
    /// Bytes dropped from the front to respect `KEEP_BYTES`.
    dropped: u64,
    /// QEMU closed the console (it exited).
    ended: bool,
}

impl Console {
    /// A console logging to `path`.
    pub fn new(path: &Path) -> Arc<Console> {
        let (grew, _) = watch::channel(0);
        Arc::new(Console {
            log: Mutex::new(Log {
                bytes: Vec::new(),
                dropped: 0,
                ended: false,
            }),
            grown: Condvar::new(),
            path: path.to_path_buf(),
            grew,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the log with `earlier` output (a restored VM's console before
    /// its snapshot), before any capture.
    pub fn seed(&self, earlier: &[u8]) {
        let mut log = self.lock();
        let keep = earlier.len().min(KEEP_BYTES);
        log.bytes = earlier[earlier.len() - keep..].to_vec();
    }

    /// Copies `source` into the log until it ends.
    pub async fn capture<R: AsyncRead + Unpin>(self: Arc<Self>, mut source: R) {
        let mut file = std::fs::File::create(&self.path).ok();
        let seeded = self.lock().bytes.clone();
        if let Some(f) = file.as_mut() {
            if f.write_all(&seeded).is_err() {
                file = None;
            }
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match source.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(f) = file.as_mut() {
                if f.write_all(&buf[..n]).is_err() {
                    file = None;
                }
            }
            let total = {
                let mut log = self.lock();
                log.bytes.extend_from_slice(&buf[..n]);
                if log.bytes.len() > KEEP_BYTES {
                    let cut = log.bytes.len() - KEEP_BYTES;
                    log.bytes.drain(..cut);
                    log.dropped += cut as u64;
                }
                log.dropped + log.bytes.len() as u64
            };
            self.grew.send_replace(total);
            self.grown.notify_all();
        }
        self.lock().ended = true;
        self.grown.notify_all();
    }

    /// Bytes from absolute offset `pos` on (what is still kept), waiting at
    /// most `timeout` for some to arrive. Returns the bytes, the new offset,
    /// and whether the console has ended.
    pub fn read_from(&self, pos: u64, timeout: Option<Duration>) -> (Vec<u8>, u64, bool) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut log = self.lock();
        loop {
            let end = log.dropped + log.bytes.len() as u64;
            if end > pos || log.ended {
                let from = pos.max(log.dropped);
                let start = (from - log.dropped) as usize;
                return (log.bytes[start..].to_vec(), end, log.ended);
            }
            let wait = match deadline {
                None => Duration::from_secs(3600),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return (Vec::new(), pos, false);
                    }
                    left
                }
            };
            log = self
                .grown
                .wait_timeout(log, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Absolute offset of the end of the output so far.
    pub fn end_offset(&self) -> u64 {
        let log = self.lock();
        log.dropped + log.bytes.len() as u64
    }

    /// Everything kept so far.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// The last `lines` lines, as text.
    pub fn tail(&self, lines: usize) -> String {
        let log = self.lock();
        let text = String::from_utf8_lossy(&log.bytes);
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A receiver notified whenever output arrives.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.grew.subscribe()
    }
}
