//! The guest's serial console: QEMU writes it to a pipe, a task copies it into
//! a log file and keeps the newest bytes in memory for error messages.
//!
//! Bounded and cheap: memory keeps the newest `KEEP_BYTES` (4 MiB, trimmed in
//! steps of `TRIM_SLACK`, 1 MiB, so a flood costs one memmove per step, not per
//! read); the log file is rotated at [`FILE_CAP`] (`console.log` →
//! `console.log.1`, replacing the older one), so a guest flooding its
//! console costs at most twice that on disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Bytes of console output kept in memory.
const KEEP_BYTES: usize = 4 * 1024 * 1024;

/// Memory may exceed [`KEEP_BYTES`] by this much before the front is cut.
const TRIM_SLACK: usize = 1024 * 1024;

/// Size at which `console.log` is rotated to `console.log.1`.
pub const FILE_CAP: u64 = 32 * 1024 * 1024;

/// How long output may gather after a short read (the added latency of
/// `console:expect` and of console tails).
const COALESCE: Duration = Duration::from_millis(10);

/// A hook run once when the guest prints that it halted.
pub type HaltHook = Box<dyn Fn() + Send + Sync>;

/// Lines of console shown in error messages.
pub const TAIL_LINES: usize = 30;

/// What the guest kernel prints when it halts (`halt -f`).
pub const HALTED: &str = "reboot: System halted";

/// Console lines that say nothing about the guest under test, left out of
/// console tails: artefacts of the `microvm` machine every guest shares.
pub const NOISE: &[&str] = &[
    // microvm has no PCI host bridge; the kernel says so at KERN_ERR.
    "PCI: Fatal: No config space access function found",
];

/// A captured console.
pub struct Console {
    log: Mutex<Log>,
    /// Signalled whenever output arrives or the capture ends.
    grown: Condvar,
    path: PathBuf,
    grew: watch::Sender<u64>,
    on_halt: std::sync::OnceLock<HaltHook>,
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
            on_halt: std::sync::OnceLock::new(),
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

    /// Sets what happens when the guest prints that it halted (once).
    pub fn on_halt(&self, hook: HaltHook) {
        let _ = self.on_halt.set(hook);
    }

    /// Copies `source` (QEMU's console pipe) into the log until it ends.
    /// Runs on a thread of its own with blocking reads: on the runtime,
    /// every few bytes QEMU writes would wake the reactor (a pipe signals a
    /// new edge per write), even while the task waits to batch them
    /// (measured: a flood of ~80 KB/s took 13-16 % of a core that way).
    pub fn capture(self: Arc<Self>, mut source: std::fs::File) {
        set_blocking(&source);
        let seeded = self.lock().bytes.clone();
        let mut file = LogFile::create(&self.path, &seeded);
        let mut buf = vec![0u8; 16 * 1024];
        let mut halted = false;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
                Ok(n) => n,
            };
            if let Some(f) = file.as_mut() {
                if f.append(&buf[..n]).is_err() {
                    file = None;
                }
            }
            let (total, halt_now) = {
                let mut log = self.lock();
                log.bytes.extend_from_slice(&buf[..n]);
                // Look for the halt line in what arrived, plus enough of the
                // bytes before to catch it split across reads.
                let from = log.bytes.len().saturating_sub(n + HALTED.len());
                let halt_now = !halted
                    && log.bytes[from..]
                        .windows(HALTED.len())
                        .any(|w| w == HALTED.as_bytes());
                if log.bytes.len() > KEEP_BYTES + TRIM_SLACK {
                    let cut = log.bytes.len() - KEEP_BYTES;
                    log.bytes.drain(..cut);
                    log.dropped += cut as u64;
                }
                (log.dropped + log.bytes.len() as u64, halt_now)
            };
            if halt_now {
                halted = true;
                if let Some(hook) = self.on_halt.get() {
                    hook();
                }
            }
            // QEMU hands the serial output over a few bytes at a time; a
            // chatty guest would cost a read, a write and a notification per
            // few bytes. After a short read, let output gather for a moment.
            if n < buf.len() / 2 {
                std::thread::sleep(COALESCE);
            }
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

    /// The last `lines` lines, as text, without [`NOISE`] lines and
    /// carriage returns.
    pub fn tail(&self, lines: usize) -> String {
        let log = self.lock();
        // Enough bytes for any reasonable number of lines, not all 4 MiB.
        let from = log.bytes.len().saturating_sub(lines.saturating_mul(512));
        let text = String::from_utf8_lossy(&log.bytes[from..]);
        let all: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !NOISE.iter().any(|n| l.contains(n)))
            .collect();
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

/// Puts a descriptor back in blocking mode (tokio hands pipes over
/// non-blocking).
fn set_blocking(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, changing only O_NONBLOCK.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// The log file, rotated at [`FILE_CAP`].
struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
}

impl LogFile {
    fn create(path: &Path, seeded: &[u8]) -> Option<LogFile> {
        let mut log = LogFile {
            path: path.to_path_buf(),
            file: std::fs::File::create(path).ok()?,
            size: 0,
        };
        log.append(seeded).ok()?;
        Some(log)
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size + bytes.len() as u64 > FILE_CAP && self.size > 0 {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = std::fs::File::create(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_bounded_in_memory_and_on_disk_and_a_halt_is_seen() {
        let dir = std::env::temp_dir().join(format!("provium-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let console = Console::new(&dir.join("console.log"));
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = seen.clone();
        console.on_halt(Box::new(move || {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let line = vec![b'x'; 1023];
        let mut flood = Vec::new();
        for _ in 0..(80 * 1024) {
            flood.extend_from_slice(&line);
            flood.push(b'\n');
        }
        // The halt line split across two reads, then said again.
        flood.extend_from_slice(b"[ 9.1] reboot: System ha");
        let mut rest = b"lted\n".to_vec();
        rest.extend_from_slice(b"reboot: System halted\n");
        let input = dir.join("input");
        let mut all = flood.clone();
        all.extend_from_slice(&rest);
        std::fs::write(&input, &all).unwrap();
        console
            .clone()
            .capture(std::fs::File::open(&input).unwrap());
        std::fs::remove_file(&input).unwrap();
        assert!(console.contents().len() <= KEEP_BYTES + TRIM_SLACK);
        assert_eq!(
            console.end_offset(),
            (flood.len() + rest.len()) as u64,
            "offsets count every byte"
        );
        let size = |p: &str| std::fs::metadata(dir.join(p)).map(|m| m.len()).unwrap_or(0);
        assert!(size("console.log") <= FILE_CAP);
        assert!(size("console.log.1") <= FILE_CAP);
        assert!(size("console.log.1") > 0, "rotated once");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the hook runs once"
        );
        assert!(console.tail(1).contains("reboot: System halted"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
