//! Child processes that cannot outlive the run, and the output stream that
//! carries a command's exit status back from a nested host.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The line stage 2 prints after the command: `@@host-matrix-exit=N@@`.
pub const EXIT_MARKER: &str = "@@host-matrix-exit=";

/// Lines the smoke prints for the summary table start with this.
pub const SUMMARY_PREFIX: &str = "smoke-summary:";

/// How long the main process may outlive a helper that ended.
const HELPER_GRACE: Duration = Duration::from_secs(5);

/// How many output lines a failure report shows.
const TAIL_LINES: usize = 30;

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// cannot start {0}: {1}
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
    /// a setup step failed
    #[error("{0}")]
    Setup(String),
    /// interrupted (SIGINT/SIGTERM/SIGHUP)
    #[error("interrupted")]
    Interrupted,
    /// the run did not end within its timeout
    #[error("timed out after {0:.0} s")]
    Timeout(f64),
    /// the nested host ended without the command's exit status
    #[error("{0}")]
    NoStatus(String),
}

/// A child process killed (SIGKILL) and reaped when dropped; it also gets
/// SIGKILL if this process dies first (`PR_SET_PDEATHSIG`).
pub struct Guard {
    name: String,
    child: Child,
}

impl Guard {
    /// Spawns `cmd`.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Guard, RunError> {
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| RunError::Spawn(name.to_string(), e))?;
        Ok(Guard {
            name: name.to_string(),
            child,
        })
    }

    /// Takes the child's piped stdout.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status, if the child has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What the output stream saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The command's exit status (from the marker line).
    pub exit: Option<i32>,
    /// `smoke-summary:` lines, without the prefix.
    pub summaries: Vec<String>,
    /// The last lines, for failure reports.
    pub tail: VecDeque<String>,
}

/// Copies `from` to stdout line by line with `prefix`, recording the exit
/// marker (not printed), summary lines and a tail.
pub fn stream(
    from: impl Read + Send + 'static,
    prefix: &'static str,
    seen: Arc<Mutex<Seen>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let line = text.trim_end_matches(['\n', '\r']).replace('\r', "");
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(code) = parse_marker(&line) {
                s.exit = Some(code);
                continue;
            }
            if let Some(rest) = line.trim_start().strip_prefix(SUMMARY_PREFIX) {
                s.summaries.push(rest.trim().to_string());
            }
            if s.tail.len() == TAIL_LINES {
                s.tail.pop_front();
            }
            s.tail.push_back(line.clone());
            drop(s);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{prefix}{line}");
            let _ = out.flush();
        }
    })
}

/// The exit status in a marker line.
pub fn parse_marker(line: &str) -> Option<i32> {
    let at = line.find(EXIT_MARKER)?;
    let rest = &line[at + EXIT_MARKER.len()..];
    rest.split("@@").next()?.trim().parse().ok()
}

/// Waits until `main` exits, checking `stop` (a signal arrived), the
/// deadline, and that every helper in `helpers` is still alive.
pub fn wait(
    main: &mut Guard,
    helpers: &mut [&mut Guard],
    stop: &AtomicBool,
    timeout: Duration,
) -> Result<ExitStatus, RunError> {
    let start = Instant::now();
    loop {
        if let Some(status) = main.exited() {
            return Ok(status);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(RunError::Interrupted);
        }
        if start.elapsed() >= timeout {
            return Err(RunError::Timeout(timeout.as_secs_f64()));
        }
        for h in helpers.iter_mut() {
            if let Some(status) = h.exited() {
                // virtiofsd ends when the guest powers off, a moment before
                // QEMU does: only a helper that dies first is a failure.
                let grace = Instant::now() + HELPER_GRACE;
                while Instant::now() < grace {
                    if let Some(main_status) = main.exited() {
                        return Ok(main_status);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Err(RunError::Setup(format!(
                    "{} ended while {} ran ({status})",
                    h.name(),
                    main.name()
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_parsed_anywhere_in_a_line() {
        assert_eq!(parse_marker("@@host-matrix-exit=0@@"), Some(0));
        assert_eq!(parse_marker("noise @@host-matrix-exit=17@@"), Some(17));
        assert_eq!(parse_marker("@@host-matrix-exit=x@@"), None);
        assert_eq!(parse_marker("exit=3"), None);
    }

    #[test]
    fn quoting_survives_the_shell() {
        for arg in ["plain", "a b", "it's", "", "$HOME", "x;rm -rf /"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(arg)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), arg);
        }
    }

    #[test]
    fn the_stream_hides_the_marker_and_keeps_summaries() {
        let input = b"one\r\nsmoke-summary: kind=x passed=3\r\n@@host-matrix-exit=4@@\r\n".to_vec();
        let seen = Arc::new(Mutex::new(Seen::default()));
        stream(std::io::Cursor::new(input), "T: ", seen.clone())
            .join()
            .expect("stream thread");
        let s = seen.lock().expect("lock");
        assert_eq!(s.exit, Some(4));
        assert_eq!(s.summaries, vec!["kind=x passed=3".to_string()]);
        assert_eq!(s.tail.len(), 2);
    }
}
