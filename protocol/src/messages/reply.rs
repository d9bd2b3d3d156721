//! What the agent answers: [`Reply`], [`Failure`] and the records they carry.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::nesting::nested;
#[allow(unused_imports)] // doc links
use super::{Op, CH_BODY};
use crate::ids::HandleId;

/// Successful results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to report.
    Unit,
    /// A file's metadata ([`Op::Stat`]).
    Stat(StatInfo),
    /// Directory entries: the whole listing, or what is left after the
    /// encoded runs sent as `Data` on [`CH_BODY`].
    Entries(Vec<DirEntry>),
    /// The last bytes of a body whose earlier bytes came as `Data`.
    Bytes(ByteBuf),
    /// How a process ended, with the output not already sent as `Data`.
    Run(RunOutcome),
    /// A new agent-side handle.
    Handle(HandleId),
    /// A byte count or file offset.
    Count(u64),
    /// Result of an ioctl.
    Ioctl {
        /// The ioctl's return value (never negative: that is a failure).
        ret: i64,
        /// The argument buffer after the call.
        data: ByteBuf,
        /// The further buffers after the call, in request order.
        bufs: Vec<ByteBuf>,
    },
    /// Result of a raw system call (`errno` is 0 when `ret` ≥ 0).
    Syscall {
        /// The raw return value (-1 on error).
        ret: i64,
        /// The call's errno when `ret` is negative, else 0.
        errno: i32,
        /// The buffers after the call, in request order.
        bufs: Vec<ByteBuf>,
    },
    /// A started process.
    Process {
        /// The process handle for the `Proc*` ops.
        handle: HandleId,
        /// The process's pid, as the agent that started it sees it.
        pid: u32,
    },
    /// Whether a process is still running.
    ProcStatus {
        /// Whether the process has not exited yet.
        running: bool,
    },
    /// The results of a batch's ops not sent ahead as `Data` (see
    /// [`crate::Op::Batch`]): the last ones, in order.
    Batch(#[serde(deserialize_with = "nested")] Vec<Result<Reply, Failure>>),
    /// A worker's exit: its code, or 128 + signal.
    Exit(i32),
}

/// Metadata of a file, as `stat(2)` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatInfo {
    /// Size in bytes.
    pub size: u64,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Device of the file system holding the file.
    pub dev: u64,
    /// Device the file stands for (device files only, else 0).
    pub rdev: u64,
    /// Space allocated, in 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O block size, in bytes.
    pub blksize: u64,
    /// Last access, in nanoseconds since the Unix epoch.
    pub atime_ns: i64,
    /// Last modification of the contents, in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Last status change, in nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
}

impl StatInfo {
    /// Permission bits (≤ 0o7777).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// The file type encoded in `mode`.
    pub fn entry_type(&self) -> EntryType {
        EntryType::from_mode(self.mode)
    }
}

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// A type this list does not know.
    Other,
}

impl EntryType {
    /// Classifies the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Self {
        match mode & 0o170000 {
            0o100000 => EntryType::File,
            0o040000 => EntryType::Directory,
            0o120000 => EntryType::Symlink,
            0o010000 => EntryType::Fifo,
            0o140000 => EntryType::Socket,
            0o060000 => EntryType::BlockDevice,
            0o020000 => EntryType::CharDevice,
            _ => EntryType::Other,
        }
    }

    /// The name the Lua API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Directory => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Fifo => "fifo",
            EntryType::Socket => "socket",
            EntryType::BlockDevice => "block_device",
            EntryType::CharDevice => "char_device",
            EntryType::Other => "other",
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's file name (no directory part), as raw bytes.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// What kind of file it is (a symbolic link is not followed).
    pub entry_type: EntryType,
}

impl DirEntry {
    /// An upper bound of this entry's encoded size.
    pub fn encoded_len_bound(&self) -> usize {
        self.name.len() + 12
    }

    /// Appends this entry's encoding: a large listing travels as `Data`
    /// chunks on [`CH_BODY`], each a run of encoded entries, before its
    /// [`Reply::Entries`] (which then holds the rest, often nothing).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), crate::FrameError> {
        let bytes = postcard::to_allocvec(self)?;
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Decodes a run of entries written by [`DirEntry::encode_into`].
    pub fn decode_run(mut bytes: &[u8]) -> Result<Vec<DirEntry>, crate::FrameError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (entry, rest) = postcard::take_from_bytes::<DirEntry>(bytes)?;
            out.push(entry);
            bytes = rest;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;

    #[test]
    fn a_run_of_entries_round_trips_and_garbage_is_an_error() {
        let entries: Vec<DirEntry> = (0..300)
            .map(|i| DirEntry {
                name: format!("file-{i}").into_bytes(),
                entry_type: if i % 2 == 0 {
                    EntryType::File
                } else {
                    EntryType::Directory
                },
            })
            .collect();
        let mut run = Vec::new();
        for e in &entries {
            let before = run.len();
            e.encode_into(&mut run).unwrap();
            assert!(run.len() - before <= e.encoded_len_bound());
        }
        assert_eq!(DirEntry::decode_run(&run).unwrap(), entries);
        assert!(DirEntry::decode_run(&run[..run.len() - 1]).is_err());
        assert!(DirEntry::decode_run(&[]).unwrap().is_empty());
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited by itself with this exit code.
    Exited(i32),
    /// Killed by this signal number.
    Signalled(i32),
    /// Killed (with its process group) because the timeout expired.
    TimedOut,
}

/// Result of [`Op::Run`]; output bytes not already sent as `Data` are here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// How the process ended.
    pub status: ExitStatus,
    /// Standard output not sent as [`crate::CH_STDOUT`] `Data`.
    pub stdout: ByteBuf,
    /// Standard error not sent as [`crate::CH_STDERR`] `Data`.
    pub stderr: ByteBuf,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Which class of failure.
    pub kind: FailureKind,
    /// The guest errno for [`FailureKind::Os`], else 0.
    pub errno: i32,
    /// Human-readable detail (for `Os`, the guest's `strerror`).
    pub message: String,
}

/// Classes of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The guest OS refused (errno is set).
    Os,
    /// The request was malformed or not valid in this state.
    BadRequest,
    /// The agent does not implement this.
    Unsupported,
    /// A handle id the agent does not know.
    UnknownHandle,
    /// A bug or resource exhaustion inside the agent.
    Internal,
}

impl Failure {
    /// An OS failure with its errno and message.
    pub fn os(errno: i32, message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Os,
            errno,
            message: message.into(),
        }
    }

    /// A failure that is not an errno.
    pub fn other(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            errno: 0,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::Os => write!(f, "{} (errno {})", self.message, self.errno),
            kind => write!(f, "agent error ({kind:?}): {}", self.message),
        }
    }
}
