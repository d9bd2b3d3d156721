//! Metadata and directory operations: stat, listdir, mkdir, unlink, rename.
//! All of them are cheap and run inline on the connection's reader thread.

use std::fs::{self, DirBuilder, FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};

use provium_protocol::{DirEntry, EntryType, Reply, RequestId, StatInfo, CHUNK_LEN, CH_BODY};

use super::path;
use crate::error::{internal, io_failure, OpResult};
use crate::sender::Sender;

/// `stat(2)` when `follow`, else `lstat(2)` → [`Reply::Stat`].
pub fn stat(p: &[u8], follow: bool) -> OpResult {
    let meta = if follow {
        fs::metadata(path(p))
    } else {
        fs::symlink_metadata(path(p))
    };
    meta.map(|m| Reply::Stat(stat_info(&m)))
        .map_err(|e| io_failure(&e))
}

/// Seconds plus nanoseconds as nanoseconds, saturating at the i64 range.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Fills every [`StatInfo`] field from `Metadata`.
pub fn stat_info(m: &Metadata) -> StatInfo {
    StatInfo {
        size: m.size(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        ino: m.ino(),
        nlink: m.nlink(),
        dev: m.dev(),
        rdev: m.rdev(),
        blocks: m.blocks(),
        blksize: m.blksize(),
        atime_ns: nanos(m.atime(), m.atime_nsec()),
        mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
        ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
    }
}

/// Classifies a `FileType`.
pub fn entry_type(t: FileType) -> EntryType {
    if t.is_file() {
        EntryType::File
    } else if t.is_dir() {
        EntryType::Directory
    } else if t.is_symlink() {
        EntryType::Symlink
    } else if t.is_fifo() {
        EntryType::Fifo
    } else if t.is_socket() {
        EntryType::Socket
    } else if t.is_block_device() {
        EntryType::BlockDevice
    } else if t.is_char_device() {
        EntryType::CharDevice
    } else {
        EntryType::Other
    }
}

/// Lists a directory (no `.`/`..`, directory order) → [`Reply::Entries`].
/// The type comes from `d_type`, or `lstat` where the file system gives none;
/// entries that cannot be read or typed are skipped.
pub fn list_dir(p: &[u8]) -> OpResult {
    entries(p).map(Reply::Entries)
}

/// A listing of any size for a connection: when its entries would not fit
/// one chunk, they go ahead as `Data` frames on [`CH_BODY`] (runs of
/// encoded entries) and the reply carries none.
pub fn list_dir_to(sender: &Sender, id: RequestId, p: &[u8]) -> OpResult {
    let all = entries(p)?;
    let size: usize = all.iter().map(DirEntry::encoded_len_bound).sum();
    if size <= CHUNK_LEN {
        return Ok(Reply::Entries(all));
    }
    let mut chunk = Vec::with_capacity(CHUNK_LEN + 4096);
    for e in &all {
        e.encode_into(&mut chunk)
            .map_err(|e| internal(format!("cannot encode a directory entry: {e}")))?;
        if chunk.len() >= CHUNK_LEN {
            sender
                .data(id, CH_BODY, &chunk)
                .map_err(|e| io_failure(&e))?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        sender
            .data(id, CH_BODY, &chunk)
            .map_err(|e| io_failure(&e))?;
    }
    Ok(Reply::Entries(Vec::new()))
}

fn entries(p: &[u8]) -> Result<Vec<DirEntry>, provium_protocol::Failure> {
    let dir = fs::read_dir(path(p)).map_err(|e| io_failure(&e))?;
    let mut entries = Vec::new();
    for entry in dir {
        let Ok(entry) = entry else { continue };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        entries.push(DirEntry {
            name: entry.file_name().as_bytes().to_vec(),
            entry_type: entry_type(file_type),
        });
    }
    Ok(entries)
}

/// Creates a directory (mode `perm`, default 0o755, umask applies); with
/// `parents`, missing parents are created and an existing directory is fine.
pub fn mkdir(p: &[u8], parents: bool, perm: Option<u32>) -> OpResult {
    DirBuilder::new()
        .recursive(parents)
        .mode(perm.unwrap_or(0o755))
        .create(path(p))
        .map(|()| Reply::Unit)
        .map_err(|e| io_failure(&e))
}

/// Removes a file, or an empty directory (`ENOTEMPTY` otherwise).
pub fn unlink(p: &[u8]) -> OpResult {
    let target = path(p);
    match fs::remove_file(target) {
        Ok(()) => Ok(Reply::Unit),
        Err(e) if is_dir_error(&e) && is_dir(p) => fs::remove_dir(target)
            .map(|()| Reply::Unit)
            .map_err(|e| io_failure(&e)),
        Err(e) => Err(io_failure(&e)),
    }
}

/// `unlink(2)` on a directory fails with `EISDIR` on Linux, `EPERM` per POSIX.
fn is_dir_error(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::ISDIR | Errno::PERM))
}

fn is_dir(p: &[u8]) -> bool {
    fs::symlink_metadata(path(p)).is_ok_and(|m| m.is_dir())
}

/// `chmod(2)` to exactly `mode & 0o7777` (follows symlinks).
pub fn chmod(p: &[u8], mode: u32) -> OpResult {
    fs::set_permissions(path(p), fs::Permissions::from_mode(mode & 0o7777))
        .map(|()| Reply::Unit)
        .map_err(|e| io_failure(&e))
}

/// `symlink(2)`: `path` becomes a symbolic link to `target`.
pub fn symlink(target: &[u8], p: &[u8]) -> OpResult {
    std::os::unix::fs::symlink(path(target), path(p))
        .map(|()| Reply::Unit)
        .map_err(|e| io_failure(&e))
}

/// `rename(2)`.
pub fn rename(from: &[u8], to: &[u8]) -> OpResult {
    fs::rename(path(from), path(to))
        .map(|()| Reply::Unit)
        .map_err(|e| io_failure(&e))
}
