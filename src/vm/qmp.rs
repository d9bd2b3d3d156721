//! The QEMU monitor (QMP), for pause/resume and snapshots.
//!
//! Built on the `qapi` crate's synchronous client (typed commands generated
//! from QEMU's schema). Calls block the calling thread: the Lua thread for
//! pause/resume/snapshot, a blocking-pool thread during a restore.

use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use qapi::{qmp, Qmp, Stream};

/// How long QEMU may take to answer one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval while a migration runs.
const POLL: Duration = Duration::from_millis(2);

/// Errors of the monitor connection.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// the monitor socket did not accept a connection in time
    #[error("cannot reach QEMU's monitor at {path}: {source}")]
    Connect {
        /// The monitor's socket path.
        path: String,
        /// Why connecting failed.
        source: std::io::Error,
    },
    /// a command failed or the connection broke
    #[error("QMP {command}: {message}")]
    Command {
        /// The QMP command (`qmp_capabilities`, `migrate`, ...).
        command: &'static str,
        /// QEMU's error, or what broke the connection.
        message: String,
    },
    /// a migration (snapshot save or load) failed
    #[error("{0}")]
    Migration(String),
    /// a migration did not finish in time
    #[error("{what} did not finish within {secs:.0} s")]
    Timeout {
        /// What did not finish, e.g. `loading the snapshot`.
        what: &'static str,
        /// The time limit, in seconds.
        secs: f64,
    },
}

type Conn = Qmp<Stream<BufReader<UnixStream>, UnixStream>>;

/// A connected, negotiated monitor.
pub struct Monitor {
    conn: Conn,
    ignore_shared: bool,
    /// The socket, for per-command read timeouts.
    sock: UnixStream,
}

impl Monitor {
    /// Connects to the monitor socket at `path`, retrying until `deadline`
    /// (QEMU creates the socket shortly after it starts).
    pub fn connect(path: &Path, deadline: Instant) -> Result<Monitor, QmpError> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source: e,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        let connect_err = |source| QmpError::Connect {
            path: path.display().to_string(),
            source,
        };
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(connect_err)?;
        let reader = stream.try_clone().map_err(connect_err)?;
        let sock = stream.try_clone().map_err(connect_err)?;
        let mut conn = Qmp::new(Stream::new(BufReader::new(reader), stream));
        conn.handshake().map_err(|e| QmpError::Command {
            command: "qmp_capabilities",
            message: e.to_string(),
        })?;
        Ok(Monitor {
            conn,
            ignore_shared: false,
            sock,
        })
    }

    fn exec<C: qapi::Command>(&mut self, cmd: &C) -> Result<C::Ok, QmpError> {
        tracing::debug!("QMP {}", C::NAME);
        let r = self.conn.execute(cmd).map_err(|e| QmpError::Command {
            command: C::NAME,
            message: e.to_string(),
        });
        // Events (STOP, RESUME, MIGRATION...) are not used: drop them.
        self.conn.events().for_each(drop);
        r
    }

    /// Stops the vCPUs.
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.exec(&qmp::stop {}).map(drop)
    }

    /// Lets the vCPUs run again.
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.exec(&qmp::cont {}).map(drop)
    }

    /// [`Monitor::status`], waiting at most `timeout` for the answer (for
    /// failure messages, which must not wait long on a wedged QEMU).
    pub fn status_within(&mut self, timeout: Duration) -> Result<String, QmpError> {
        let _ = self.sock.set_read_timeout(Some(timeout));
        let r = self.status();
        let _ = self.sock.set_read_timeout(Some(COMMAND_TIMEOUT));
        r
    }

    /// The run state as QEMU names it (`running`, `paused`, `inmigrate`...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let s = self.exec(&qmp::query_status {})?;
        Ok(enum_name(&s.status).unwrap_or_else(|| "unknown".into()))
    }

    /// Leaves file-backed shared guest RAM out of migration streams: the
    /// snapshot copies that file itself (see `super::memory`).
    fn skip_shared_ram(&mut self) -> Result<(), QmpError> {
        if !self.ignore_shared {
            self.exec(&qmp::migrate_set_capabilities {
                capabilities: vec![qmp::MigrationCapabilityStatus {
                    capability: qmp::MigrationCapability::x_ignore_shared,
                    state: true,
                }],
            })?;
            self.ignore_shared = true;
        }
        Ok(())
    }

    /// Writes the device state (everything but shared RAM) to `file`; the
    /// VM must be stopped. QEMU connects to a Unix socket we listen on at
    /// `sock` and we write the file ourselves, so it is complete when this
    /// returns. (QEMU 7.2 has no `file:` URI; with `exec:cat > file` QEMU
    /// reports the migration complete and then SIGTERMs a `cat` that has
    /// not exited yet: on a slow host the file was sometimes missing.)
    pub fn save_state(
        &mut self,
        file: &Path,
        sock: &Path,
        timeout: Duration,
    ) -> Result<(), QmpError> {
        const WHAT: &str = "saving the device state";
        self.skip_shared_ram()?;
        let deadline = Instant::now() + timeout;
        let _ = std::fs::remove_file(sock);
        let listener = UnixListener::bind(sock).map_err(|e| io_failure(WHAT, e))?;
        let _unlink = Unlink(sock);
        listener
            .set_nonblocking(true)
            .map_err(|e| io_failure(WHAT, e))?;
        self.exec(&qmp::migrate {
            uri: Some(format!("unix:{}", sock.display())),
            channels: None,
            detach: None,
            resume: None,
        })?;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_failure(WHAT, e)),
            }
            // QEMU connects at once; a failed migration never does.
            self.migration_done(WHAT)?;
            if Instant::now() >= deadline {
                let _ = self.exec(&qmp::migrate_cancel {});
                return Err(QmpError::Timeout {
                    what: WHAT,
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(POLL);
        };
        let copied = (|| {
            stream.set_nonblocking(false)?;
            let left = deadline.saturating_duration_since(Instant::now());
            stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut out = std::fs::File::create(file)?;
            std::io::copy(&mut stream, &mut out)?;
            out.sync_all()
        })();
        if let Err(e) = copied {
            let _ = self.exec(&qmp::migrate_cancel {});
            let _ = std::fs::remove_file(file);
            return Err(io_failure(WHAT, e));
        }
        self.wait_migration(WHAT, deadline.saturating_duration_since(Instant::now()))
    }

    /// Loads the device state from `file` into a QEMU started with
    /// `-incoming defer`, and waits until it is loaded (the VM stays paused).
    pub fn load_state(&mut self, file: &Path, timeout: Duration) -> Result<(), QmpError> {
        self.skip_shared_ram()?;
        self.exec(&qmp::migrate_incoming {
            uri: Some(format!("exec:cat {}", shell_quote(file))),
            channels: None,
            exit_on_error: None,
        })?;
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status()?;
            match status.as_str() {
                "inmigrate" => {}
                "paused" | "prelaunch" | "running" => return Ok(()),
                other => {
                    return Err(QmpError::Migration(format!(
                        "loading the snapshot left QEMU in state {other:?}"
                    )))
                }
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Timeout {
                    what: "loading the snapshot",
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// `Ok(true)` once the outgoing migration completed, `Ok(false)` while
    /// it runs, an error if it failed.
    fn migration_done(&mut self, what: &'static str) -> Result<bool, QmpError> {
        let info = self.exec(&qmp::query_migrate {})?;
        let status = info.status.as_ref().and_then(enum_name).unwrap_or_default();
        match status.as_str() {
            "completed" => Ok(true),
            "failed" | "cancelled" => Err(QmpError::Migration(format!(
                "{what} failed: {}",
                info.error_desc.unwrap_or_else(|| status.clone())
            ))),
            _ => Ok(false),
        }
    }

    fn wait_migration(&mut self, what: &'static str, timeout: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.migration_done(what)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.exec(&qmp::migrate_cancel {});
                return Err(QmpError::Timeout {
                    what,
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

/// A host-side I/O failure while moving a migration stream.
fn io_failure(what: &str, e: std::io::Error) -> QmpError {
    QmpError::Migration(format!("{what} failed: {e}"))
}

/// Removes a socket path when dropped.
struct Unlink<'a>(&'a Path);

impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// QEMU's name for a QAPI enum value (`running`, `completed`...).
fn enum_name<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

/// `'path'` for `sh -c`, with embedded quotes escaped.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_paths_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(shell_quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }
}
