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
        /// Path of the file in the guest (raw bytes).
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Whether a final symbolic link is followed (`stat`) or not (`lstat`).
        follow: bool,
    },
    /// Whole file → `Data` chunks on [`CH_BODY`], then [`Reply::Bytes`] with the
    /// remaining tail (small files come back in the reply alone).
    ReadFile {
        /// Path of the file in the guest.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// Create or truncate, then write `data`; when `more` is set, further
    /// [`HostMsg::Data`] frames follow until one has `last`. → [`Reply::Unit`].
    WriteFile {
        /// Path of the file in the guest.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Mode and owner the file gets (see [`FileAttrs`]).
        attrs: FileAttrs,
        /// The first bytes of the body (all of it unless `more` is set).
        data: ByteBuf,
        /// Whether [`HostMsg::Data`] frames bring the rest of the body.
        more: bool,
    },
    /// → [`Reply::Entries`] (no `.` and `..`, directory order).
    ListDir {
        /// Path of the directory in the guest.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// → [`Reply::Unit`]. With `parents`, existing directories are fine.
    Mkdir {
        /// Path of the directory to create.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Whether missing parents are created too, like `mkdir -p`.
        parents: bool,
        /// Default 0o755, umask applies.
        perm: Option<u32>,
    },
    /// Removes a file, or an empty directory. → [`Reply::Unit`].
    Unlink {
        /// Path of the file or empty directory to remove.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// `rename(2)`. → [`Reply::Unit`].
    Rename {
        /// The current path.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// The new path (an existing file there is replaced, as `rename(2)` does).
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
        /// Path of the file in the guest.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Access and creation flags.
        mode: OpenMode,
    },
    /// One `read(2)` of at most `len` bytes (capped at [`crate::CHUNK_LEN`]) →
    /// [`Reply::Bytes`] (empty at end of file).
    FileRead {
        /// The file handle.
        handle: HandleId,
        /// Most bytes to read.
        len: u64,
    },
    /// One `write(2)` → [`Reply::Count`] (may be short).
    FileWrite {
        /// The file handle.
        handle: HandleId,
        /// Bytes to write at the handle's offset.
        data: ByteBuf,
    },
    /// `lseek(2)` → [`Reply::Count`] with the new offset. A negative
    /// resulting offset for `Set` is clamped to 0.
    FileSeek {
        /// The file handle.
        handle: HandleId,
        /// Byte offset, relative to `whence`.
        offset: i64,
        /// What `offset` is relative to.
        whence: Whence,
    },
    /// Closes any handle (file, process, worker: see each) → [`Reply::Unit`].
    Close {
        /// The handle to close.
        handle: HandleId,
    },
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
        /// The process handle from `RunAsync`.
        handle: HandleId,
        /// Kill the process group after this many milliseconds; `None` waits forever.
        timeout_ms: Option<u64>,
    },
    /// Sends a signal to the process, or with `group` to its process group
    /// (the command and what it started) → [`Reply::Unit`].
    ProcSignal {
        /// The process handle from `RunAsync`.
        handle: HandleId,
        /// Signal number (e.g. 15 for `SIGTERM`).
        signal: i32,
        /// Whether the whole process group gets the signal.
        group: bool,
    },
    /// → [`Reply::ProcStatus`].
    ProcStatus {
        /// The process handle from `RunAsync`.
        handle: HandleId,
    },
    /// Writes to the process's stdin → [`Reply::Count`].
    ProcStdin {
        /// The process handle from `RunAsync`.
        handle: HandleId,
        /// Bytes to write.
        data: ByteBuf,
    },
    /// Closes the process's stdin → [`Reply::Unit`].
    ProcCloseStdin {
        /// The process handle from `RunAsync`.
        handle: HandleId,
    },

    // ---- Raw calls ----
    /// A raw system call → [`Reply::Syscall`] (never a failure for the call's
    /// own error: that is in `errno`).
    Syscall(SyscallSpec),

    // ---- Batches ----
    /// Runs each op in order on the agent → one result per op, a failure
    /// not stopping the rest: runs of results may come ahead as `Data` on
    /// [`crate::CH_BODY`] (each a whole number of encoded
    /// `Result<Reply, Failure>`, in order), the others in [`Reply::Batch`]. Streams, batches, uploads with
    /// `more` and worker control cannot be batched (their entries fail).
    Batch(#[serde(deserialize_with = "nested")] Vec<Op>),

    // ---- Workers ----
    /// Starts a worker: a separate agent process with its own credentials
    /// and namespaces → [`Reply::Handle`].
    SpawnWorker(WorkerSpec),
    /// Runs `op` inside worker `worker`; the reply (and any `Data`) is the
    /// worker's, relayed. Handles returned by the worker live in the worker.
    InWorker {
        /// The worker handle from `SpawnWorker`.
        worker: HandleId,
        /// The operation the worker runs.
        #[serde(deserialize_with = "nested")]
        op: Box<Op>,
    },
    /// Signals the worker process → [`Reply::Unit`].
    WorkerSignal {
        /// The worker handle from `SpawnWorker`.
        worker: HandleId,
        /// Signal number (e.g. 9 for `SIGKILL`).
        signal: i32,
    },
    /// Ends the worker's channel and reaps it → [`Reply::Exit`].
    WorkerJoin {
        /// The worker handle from `SpawnWorker`.
        worker: HandleId,
    },

    // ---- Added in protocol 4 (at the end: the variant indexes above are
    // relied on by the zero-copy parsers: see `crate::wire`) ----
    /// `chmod(2)` (follows symlinks) to exactly `mode` (the bits of 0o7777).
    /// → [`Reply::Unit`].
    Chmod {
        /// Path of the file in the guest.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// The new permission bits (bits above 0o7777 are ignored).
        mode: u32,
    },

    // ---- Added in protocol 5 ----
    /// `symlink(2)`: creates `path`, a symbolic link to `target` (which need
    /// not exist). → [`Reply::Unit`].
    Symlink {
        /// What the link points to, stored as is.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
        /// Path of the link to create.
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
    /// Exact permission bits the file ends with; `None` keeps an existing file's mode.
    pub perm: Option<u32>,
    /// New owner; `None` leaves it.
    pub uid: Option<u32>,
    /// New group; `None` leaves it.
    pub gid: Option<u32>,
}

/// How to open a file. At least one of `read`, `write`, `append` must be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMode {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Open for writing, every write at the end (`O_APPEND`).
    pub append: bool,
    /// Create the file if it does not exist (`O_CREAT`; needs write access).
    pub create: bool,
    /// Truncate the file to 0 bytes (`O_TRUNC`; needs write access).
    pub truncate: bool,
    /// With `create`, fail if the file exists (`O_EXCL`).
    pub exclusive: bool,
    /// Mode of a created file (default 0o644, umask applies).
    pub perm: Option<u32>,
}

/// `lseek` whence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whence {
    /// From the start of the file (`SEEK_SET`).
    Set,
    /// From the current offset (`SEEK_CUR`).
    Cur,
    /// From the end of the file (`SEEK_END`).
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
        /// Path of the file in the guest.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Where in the file the stream starts.
        start: TailStart,
    },
    /// An open file handle, from its current offset (shared with the
    /// handle). Ends when the handle is closed.
    Handle {
        /// The file handle.
        handle: HandleId,
    },
    /// A process's output (from byte 0, then live); ends when the process
    /// has exited and its output is drained.
    Process {
        /// The process handle from `RunAsync`.
        handle: HandleId,
        /// Which output: [`CH_STDOUT`] or [`CH_STDERR`].
        channel: u8,
    },
}

/// A raw system call: `args` become the six arguments; `ptrs[i]` is the
/// 0-based argument slot that receives the address of `bufs[i]`; each
/// `nested` entry writes the 8-byte address of buffer `child` into buffer
/// `parent` at `offset` (0-based buffer indices) before `ptrs` apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallSpec {
    /// The system call number (x86-64 `SYS_*`).
    pub nr: i64,
    /// The six arguments, before buffer addresses replace some of them.
    pub args: [u64; 6],
    /// Buffers the call reads or writes; they come back in [`Reply::Syscall`].
    pub bufs: Vec<ByteBuf>,
    /// For each buffer in order, the argument slot (0..6) that gets its address.
    pub ptrs: Vec<u8>,
    /// Buffer addresses to write into other buffers first.
    pub nested: Vec<Nested>,
}

/// Splices a buffer's address into another buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nested {
    /// Index of the buffer written into.
    pub parent: u32,
    /// Index of the buffer whose address is written.
    pub child: u32,
    /// Byte offset in `parent` of the 8-byte address (skipped if it does not fit).
    pub offset: u64,
}

/// An ioctl on a file handle: the kernel gets the address of `data`; the
/// address of `bufs[i]` is written (8 bytes, native endian) into `data` at
/// `ptr_offsets[i]` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoctlSpec {
    /// The file handle whose descriptor gets the ioctl.
    pub handle: HandleId,
    /// The ioctl request number.
    pub cmd: u64,
    /// The argument buffer; when empty the kernel gets a null pointer instead.
    pub data: ByteBuf,
    /// Further buffers that `data` points to; they come back in [`Reply::Ioctl`].
    pub bufs: Vec<ByteBuf>,
    /// For each buffer in order, the byte offset in `data` of its address.
    pub ptr_offsets: Vec<u64>,
}

/// A worker's credentials and namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// User id the worker runs as; `None` keeps the agent's.
    pub uid: Option<u32>,
    /// Group id the worker runs as; `None` keeps the agent's.
    pub gid: Option<u32>,
    /// Supplementary groups (replacing the agent's when set).
    pub groups: Option<Vec<u32>>,
    /// Working directory of the worker; `None` keeps the agent's.
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
    /// Arguments after the program name (`argv[1..]`).
    pub args: Vec<ByteBuf>,
    /// Variables set on top of the agent's environment (or of an empty one).
    pub env: Vec<(ByteBuf, ByteBuf)>,
    /// Start from an empty environment instead of the agent's.
    pub env_clear: bool,
    /// Working directory of the process; `None` keeps the agent's.
    pub cwd: Option<ByteBuf>,
    /// Bytes written to the child's stdin, which is then closed. With
    /// `stdin_more`, further [`HostMsg::Data`] frames follow until `last`.
    pub stdin: ByteBuf,
    /// Whether [`HostMsg::Data`] frames bring more stdin bytes.
    pub stdin_more: bool,
    /// Kill the whole process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// `Run`: kill the process group once stdout and stderr together
    /// exceed this many bytes, and fail the call with `EFBIG`.
    pub max_output: Option<u64>,
}
