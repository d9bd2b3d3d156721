//! Uploads in flight on one connection: write_file bodies that continue in
//! `HostMsg::Data` frames, and process stdin fed the same way.
//!
//! The map lives on the connection's reader thread, so file chunks are written
//! inline in arrival order. Stdin chunks go through a channel to the process's
//! stdin writer thread, so a process that does not read cannot stall the
//! connection.
//!
//! `libc` errno constants appear here only as the numbers sent to the host.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::mpsc;

use provium_protocol::{FileAttrs, Reply, RequestId};

use super::path;
use crate::error::{errno_failure, io_failure, OpResult};
use crate::sender::Sender;

/// Feeds stdin chunks to a running process; dropping it closes the stdin.
pub type StdinFeed = mpsc::Receiver<Vec<u8>>;

enum Upload {
    File(File),
    Stdin(mpsc::Sender<Vec<u8>>),
}

/// The uploads of one connection, keyed by the request id of their call.
#[derive(Default)]
pub struct Uploads {
    map: HashMap<RequestId, Upload>,
}

impl Uploads {
    /// Handles `Op::WriteFile`: creates or truncates the file, gives it
    /// `attrs` (see [`FileAttrs`]) and writes `data`. Without `more` the
    /// call is complete and its result is returned; with `more` the file stays
    /// open for the following `Data` frames and `None` is returned.
    pub fn write_file(
        &mut self,
        id: RequestId,
        p: &[u8],
        attrs: FileAttrs,
        data: &[u8],
        more: bool,
    ) -> Option<OpResult> {
        let mut file = match create(p, attrs) {
            Ok(file) => file,
            Err(e) => return Some(Err(io_failure(&e))),
        };
        if let Err(e) = file.write_all(data) {
            return Some(Err(io_failure(&e)));
        }
        if more {
            self.map.insert(id, Upload::File(file));
            None
        } else {
            Some(close(file))
        }
    }

    /// Registers the stdin of a `Run` call whose stdin continues in `Data`
    /// frames; the returned feed goes to the process's stdin writer.
    pub fn stdin(&mut self, id: RequestId) -> StdinFeed {
        let (tx, rx) = mpsc::channel();
        self.map.insert(id, Upload::Stdin(tx));
        rx
    }

    /// Handles `HostMsg::Data`. Data for an unknown id (finished, failed or
    /// never started) is ignored. A write_file that fails on a chunk is
    /// answered once with the failure and forgotten.
    pub fn data(&mut self, sender: &Sender, id: RequestId, chunk: &[u8], last: bool) {
        let Some(upload) = self.map.get_mut(&id) else {
            debug!("{id}: data for no upload in flight; ignored");
            return;
        };
        match upload {
            Upload::File(file) => {
                let written = file.write_all(chunk);
                if written.is_ok() && !last {
                    return;
                }
                let Some(Upload::File(file)) = self.map.remove(&id) else {
                    return;
                };
                let result = match written {
                    Ok(()) => close(file),
                    Err(e) => Err(io_failure(&e)),
                };
                let _ = sender.reply(id, result);
            }
            Upload::Stdin(tx) => {
                // A send fails once the process's stdin is gone; stop routing.
                let delivered = chunk.is_empty() || tx.send(chunk.to_vec()).is_ok();
                if last || !delivered {
                    self.map.remove(&id);
                }
            }
        }
    }

    /// Handles `HostMsg::Cancel`: a write_file upload is dropped and answered
    /// with `ECANCELED` (the file keeps what was written); a process's stdin
    /// is closed (the `Run` call replies as usual when the process ends).
    pub fn cancel(&mut self, sender: &Sender, id: RequestId) {
        match self.map.remove(&id) {
            Some(Upload::File(_)) => {
                let _ = sender.reply(id, Err(errno_failure(libc::ECANCELED)));
            }
            Some(Upload::Stdin(_)) => {}
            None => debug!("{id}: cancel for nothing in flight; ignored"),
        }
    }

    /// Whether call `id` has an upload in flight.
    pub fn contains(&self, id: RequestId) -> bool {
        self.map.contains_key(&id)
    }
}

/// Creates or truncates `p` for writing and gives it `attrs`: the owner
/// first (`fchown` clears set-id bits), then exactly `perm` (no umask).
fn create(p: &[u8], attrs: FileAttrs) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(attrs.perm.unwrap_or(0o644) & 0o7777)
        .open(path(p))?;
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(&file, attrs.uid, attrs.gid)?;
    }
    if let Some(perm) = attrs.perm {
        file.set_permissions(std::fs::Permissions::from_mode(perm & 0o7777))?;
    }
    Ok(file)
}

/// `Op::WriteFile` whose data is complete (no `Data` frames follow).
pub fn write_whole(p: &[u8], attrs: FileAttrs, data: &[u8]) -> OpResult {
    let mut file = create(p, attrs).map_err(|e| io_failure(&e))?;
    file.write_all(data).map_err(|e| io_failure(&e))?;
    close(file)
}

/// Closes a written file, reporting the error of `close(2)` (which `drop`
/// would swallow).
fn close(file: File) -> OpResult {
    let fd = file.into_raw_fd();
    // Stays raw: std and rustix's safe API close without reporting the error
    // (rustix's `try_close` is a discouraged opt-in feature, unsafe as well).
    // SAFETY: fd was owned by `file` and is closed exactly once here.
    if unsafe { libc::close(fd) } == -1 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(io_failure(&err));
        }
    }
    Ok(Reply::Unit)
}
