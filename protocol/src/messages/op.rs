//! What the host asks: [`Op`] and the specs its variants carry.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::nesting::nested;
#[allow(unused_imports)] // doc links
use super::{HostMsg, Reply, CH_BODY, CH_STDERR, CH_STDOUT};
use crate::ids::HandleId;

/// The operations an agent serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Replies [`Reply::Unit`]; measures a round trip.
    Ping,
    /// `stat(2)` (or `lstat(2)` when `follow` is false) → [`Reply::Stat`].
    Stat {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        follow: bool,
    },
    /// Whole file → `Data` chunks on [`CH_BODY`], then [`Reply::Bytes`] with the
    /// remaining tail (small files come back in the reply alone).
    ReadFile {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// Create or truncate, then write `data`; when `more` is set, further
    /// [`HostMsg::Data`] frames follow until one has `last`. → [`Reply::Unit`].
    WriteFile {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Mode and owner the file gets (see [`FileAttrs`]).
        attrs: FileAttrs,
        data: ByteBuf,
        more: bool,
    },
    /// → [`Reply::Entries`] (no `.` and `..`, directory order).
    ListDir {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// → [`Reply::Unit`]. With `parents`, existing directories are fine.
    Mkdir {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        parents: bool,
        /// Default 0o755, umask applies.
        perm: Option<u32>,
    },
    /// Removes a file, or an empty directory. → [`Reply::Unit`].
    Unlink {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// `rename(2)`. → [`Reply::Unit`].
    Rename {
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
    /// Runs a program to completion. Output arrives as `Data` on
    /// [`CH_STDOUT`]/[`CH_STDERR`], then [`Reply::Run`].
    Run(RunSpec),
    /// Syncs file systems and powers the guest off after replying.
    Poweroff,

    // ---- File handles ----
    /// `open(2)` → [`Reply::Handle`] of a file handle.
    OpenFile {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        mode: OpenMode,
    },
    /// One `read(2)` of at most `len` bytes (capped at [`crate::CHUNK_LEN`]) →
    /// [`Reply::Bytes`] (empty at end of file).
    FileRead { handle: HandleId, len: u64 },
    /// One `write(2)` → [`Reply::Count`] (may be short).
    FileWrite { handle: HandleId, data: ByteBuf },
    /// `lseek(2)` → [`Reply::Count`] with the new offset. A negative
    /// resulting offset for `Set` is clamped to 0.
    FileSeek {
        handle: HandleId,
        offset: i64,
        whence: Whence,
    },
    /// Closes any handle (file, process, worker: see each) → [`Reply::Unit`].
    Close { handle: HandleId },
    /// `ioctl(2)` on a file handle's descriptor → [`Reply::Ioctl`]; a negative
    /// return is an OS failure.
    Ioctl(IoctlSpec),

    // ---- Streams (answered by `Data` on CH_BODY until the reply) ----
    /// Follows a source. Once it is open the agent sends an empty `Data`
    /// frame (an opening failure is the reply instead); then the bytes
    /// already there (from `start`) and every byte appended later, as `Data`
    /// frames, until the source ends or the host sends [`HostMsg::Cancel`];
    /// then [`Reply::Unit`].
    Stream(StreamSource),

    // ---- Processes ----
    /// Starts a process (stdin stays open) → [`Reply::Process`].
    RunAsync(RunSpec),
    /// Waits for a process started by `RunAsync` → [`Reply::Run`] (output in
    /// `Data` like `Run`). On timeout the process group is killed
    /// (`ExitStatus::TimedOut`). A second wait is a failure (EBADF).
    ProcWait {
        handle: HandleId,
        timeout_ms: Option<u64>,
    },
    /// Sends a signal to the process, or with `group` to its process group
    /// (the command and what it started) → [`Reply::Unit`].
    ProcSignal {
        handle: HandleId,
        signal: i32,
        group: bool,
    },
    /// → [`Reply::ProcStatus`].
    ProcStatus { handle: HandleId },
    /// Writes to the process's stdin → [`Reply::Count`].
    ProcStdin { handle: HandleId, data: ByteBuf },
    /// Closes the process's stdin → [`Reply::Unit`].
    ProcCloseStdin { handle: HandleId },

    // ---- Raw calls ----
    /// A raw system call → [`Reply::Syscall`] (never a failure for the call's
    /// own error: that is in `errno`).
    Syscall(SyscallSpec),

    // ---- Batches ----
    /// Runs each op in order on the agent → [`Reply::Batch`], one result per
    /// op; a failure does not stop the rest. Streams, batches, uploads with
    /// `more` and worker control cannot be batched (their entries fail).
    Batch(#[serde(deserialize_with = "nested")] Vec<Op>),

    // ---- Workers ----
    /// Starts a worker: a separate agent process with its own credentials
    /// and namespaces → [`Reply::Handle`].
    SpawnWorker(WorkerSpec),
    /// Runs `op` inside worker `worker`; the reply (and any `Data`) is the
    /// worker's, relayed. Handles returned by the worker live in the worker.
    InWorker {
        worker: HandleId,
        #[serde(deserialize_with = "nested")]
        op: Box<Op>,
    },
    /// Signals the worker process → [`Reply::Unit`].
    WorkerSignal { worker: HandleId, signal: i32 },
    /// Ends the worker's channel and reaps it → [`Reply::Exit`].
    WorkerJoin { worker: HandleId },

    // ---- Added in protocol 4 (at the end: the variant indexes above are
    // relied on by the zero-copy parsers: see `crate::wire`) ----
    /// `chmod(2)` (follows symlinks) to exactly `mode` (the bits of 0o7777).
    /// → [`Reply::Unit`].
    Chmod {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        mode: u32,
    },

    // ---- Added in protocol 5 ----
    /// `symlink(2)`: creates `path`, a symbolic link to `target` (which need
    /// not exist). → [`Reply::Unit`].
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
}

/// Mode and owner of a file that `WriteFile` writes.
///
/// Without `perm` a new file gets 0o644 (umask applies) and an existing one
/// keeps its mode; with `perm` the file ends with exactly those bits (umask
/// does not apply). `uid`/`gid` change the owner (`fchown`, before the mode,
/// so set-id bits survive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    pub perm: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// How to open a file. At least one of `read`, `write`, `append` must be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMode {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub create: bool,
    pub truncate: bool,
    pub exclusive: bool,
    /// Mode of a created file (default 0o644, umask applies).
    pub perm: Option<u32>,
}

/// `lseek` whence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whence {
    Set,
    Cur,
    End,
}

/// Where a stream starts in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TailStart {
    /// Only bytes appended after the call.
    End,
    /// This absolute byte offset (0 = the beginning).
    Offset(u64),
    /// This many bytes before the end (clamped at 0).
    FromEnd(u64),
}

/// What a stream follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamSource {
    /// A file by path. The agent is woken by the kernel (inotify), never by
    /// a timer. A file truncated below the read position ends the stream.
    File {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        start: TailStart,
    },
    /// An open file handle, from its current offset (shared with the
    /// handle). Ends when the handle is closed.
    Handle { handle: HandleId },
    /// A process's output (from byte 0, then live); ends when the process
    /// has exited and its output is drained.
    Process { handle: HandleId, channel: u8 },
}

/// A raw system call: `args` become the six arguments; `ptrs[i]` is the
/// 0-based argument slot that receives the address of `bufs[i]`; each
/// `nested` entry writes the 8-byte address of buffer `child` into buffer
/// `parent` at `offset` (0-based buffer indices) before `ptrs` apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallSpec {
    pub nr: i64,
    pub args: [u64; 6],
    pub bufs: Vec<ByteBuf>,
    pub ptrs: Vec<u8>,
    pub nested: Vec<Nested>,
}

/// Splices a buffer's address into another buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nested {
    pub parent: u32,
    pub child: u32,
    pub offset: u64,
}

/// An ioctl on a file handle: the kernel gets the address of `data`; the
/// address of `bufs[i]` is written (8 bytes, native endian) into `data` at
/// `ptr_offsets[i]` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoctlSpec {
    pub handle: HandleId,
    pub cmd: u64,
    pub data: ByteBuf,
    pub bufs: Vec<ByteBuf>,
    pub ptr_offsets: Vec<u64>,
}

/// A worker's credentials and namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups (replacing the agent's when set).
    pub groups: Option<Vec<u32>>,
    pub cwd: Option<ByteBuf>,
    /// Namespaces to unshare: any of "mount", "net", "pid", "ipc", "uts".
    pub unshare: Vec<String>,
}

/// How to start a process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Program to execute, looked up in `PATH` when it has no slash.
    #[serde(with = "serde_bytes")]
    pub program: Vec<u8>,
    pub args: Vec<ByteBuf>,
    /// Variables set on top of the agent's environment (or of an empty one).
    pub env: Vec<(ByteBuf, ByteBuf)>,
    pub env_clear: bool,
    pub cwd: Option<ByteBuf>,
    /// Bytes written to the child's stdin, which is then closed. With
    /// `stdin_more`, further [`HostMsg::Data`] frames follow until `last`.
    pub stdin: ByteBuf,
    pub stdin_more: bool,
    /// Kill the whole process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// `Run`: kill the process group once stdout and stderr together
    /// exceed this many bytes, and fail the call with `EFBIG`.
    pub max_output: Option<u64>,
}
