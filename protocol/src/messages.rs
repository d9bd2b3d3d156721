//! Message types. Field order is wire order (postcard is not self-describing):
//! append new variants at the end of an enum, never reorder, and bump
//! [`crate::PROTOCOL_VERSION`] for any change that an older peer could misread.
//! Variant indexes that hand-written encoders rely on live in [`crate::wire`],
//! whose tests pin every variant of the message enums.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{HandleId, RequestId, SessionToken};

/// How deeply the recursive parts of a message (`Op::Batch`,
/// `Op::InWorker`, `Reply::Batch`) may nest in a decoded frame. Real
/// messages nest at most twice (a batch inside a worker call); without a
/// limit, a frame of `[Batch, 1]` pairs makes the recursive decoder
/// overflow the stack (an abort, not an error) at under a thousand levels.
pub const MAX_NESTING: usize = 16;

thread_local! {
    /// Recursive fields being decoded on this thread right now.
    static NESTING: Cell<usize> = const { Cell::new(0) };
}

/// One level of [`NESTING`], released when dropped (also on error).
struct NestingLevel;

impl NestingLevel {
    fn enter<E: serde::de::Error>() -> Result<NestingLevel, E> {
        NESTING.with(|n| {
            if n.get() >= MAX_NESTING {
                return Err(E::custom(format_args!(
                    "message nested deeper than {MAX_NESTING} levels"
                )));
            }
            n.set(n.get() + 1);
            Ok(NestingLevel)
        })
    }
}

impl Drop for NestingLevel {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Decodes a recursive field one [`MAX_NESTING`] level down (the encoding
/// is unchanged: this only refuses frames that nest too deeply).
fn nested<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let _level = NestingLevel::enter::<D::Error>()?;
    T::deserialize(d)
}

/// `Data` channel carrying a file body (read_file).
pub const CH_BODY: u8 = 0;
/// `Data` channel carrying a process's standard output.
pub const CH_STDOUT: u8 = 1;
/// `Data` channel carrying a process's standard error.
pub const CH_STDERR: u8 = 2;
/// `Data` channel of a size hint: 8 bytes, u64 little-endian, sent before the
/// first body chunk of a `ReadFile` longer than one chunk (the size `fstat`
/// gave; the body may still turn out shorter or longer). The agent then waits
/// (up to 30 s) for an empty `HostMsg::Data` — the host's go — before sending
/// the body, so the host can build the result in place first instead of
/// joining chunks into a second copy.
pub const CH_SIZE_HINT: u8 = 3;

/// What the agent says first on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    /// Must stay the first field: see the crate docs.
    pub version: u32,
    /// The agent crate's version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel: String,
}

/// Frames the host sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    /// The host accepts the agent's hello; `version` is the host's version.
    /// `token` is the VM's secret for host-initiated connections (learnt
    /// only on connections the guest dialled; zero towards workers).
    Hello { version: u32, token: SessionToken },
    /// The host refuses the agent (version mismatch) and closes the connection.
    HelloRejected { version: u32, reason: String },
    /// Starts an operation.
    Call { id: RequestId, op: Op },
    /// More upload bytes for a call in flight (write_file, process stdin).
    /// `last` ends the upload.
    Data {
        id: RequestId,
        chunk: ByteBuf,
        last: bool,
    },
    /// Asks the agent to end a call early (closes a stream, drops an upload).
    Cancel { id: RequestId },
}

/// Frames the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// First frame on every connection.
    Hello(AgentHello),
    /// The final answer to a call.
    Reply {
        id: RequestId,
        result: Result<Reply, Failure>,
    },
    /// Bulk bytes for a call in flight, before its reply (file bodies, process
    /// output, stream pushes). The host concatenates them per channel.
    Data {
        id: RequestId,
        channel: u8,
        chunk: ByteBuf,
    },
    /// The agent refuses the host's hello (version mismatch) and closes.
    HelloRejected { version: u32, reason: String },
}

/// A borrowed view of a [`HostMsg::Data`] frame body: lets a receiver write
/// upload bytes straight from its read buffer instead of copying them into
/// an owned message first (bulk uploads are copy-bound under TCG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataView<'a> {
    pub id: RequestId,
    pub chunk: &'a [u8],
    pub last: bool,
}

impl HostMsg {
    /// Parses `body` as a `Data` frame without copying; `None` when it is
    /// another kind of message (decode those with [`crate::decode`]).
    pub fn data_view(body: &[u8]) -> Option<Result<DataView<'_>, crate::FrameError>> {
        let rest = body.strip_prefix(&[crate::wire::HOST_DATA])?;
        let parse = || {
            let (id, rest) = postcard::take_from_bytes::<RequestId>(rest)?;
            let (chunk, rest) = postcard::take_from_bytes::<&[u8]>(rest)?;
            let (last, rest) = postcard::take_from_bytes::<bool>(rest)?;
            if !rest.is_empty() {
                return Err(postcard::Error::DeserializeBadEncoding);
            }
            Ok(DataView { id, chunk, last })
        };
        Some(parse().map_err(crate::FrameError::from))
    }
}

/// A borrowed view of an [`AgentMsg::Data`] frame body (see [`DataView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDataView {
    pub id: RequestId,
    pub channel: u8,
    /// Where the chunk lies within the frame body.
    pub chunk: std::ops::Range<usize>,
}

impl AgentMsg {
    /// Locates the chunk of a `Data` frame without copying it; `None` when
    /// `body` is another kind of message.
    pub fn data_view(body: &[u8]) -> Option<Result<AgentDataView, crate::FrameError>> {
        let rest = body.strip_prefix(&[crate::wire::AGENT_DATA])?;
        let parse = || {
            let (id, rest) = postcard::take_from_bytes::<RequestId>(rest)?;
            let (channel, rest) = postcard::take_from_bytes::<u8>(rest)?;
            let (chunk, rest) = postcard::take_from_bytes::<&[u8]>(rest)?;
            if !rest.is_empty() {
                return Err(postcard::Error::DeserializeBadEncoding);
            }
            let start = body.len() - chunk.len();
            Ok(AgentDataView {
                id,
                channel,
                chunk: start..body.len(),
            })
        };
        Some(parse().map_err(crate::FrameError::from))
    }
}

/// Checks a peer's protocol version; `Err` carries the peer's version.
pub fn check_version(peer: u32) -> Result<(), u32> {
    if peer == crate::PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(peer)
    }
}

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

/// Successful results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Unit,
    Stat(StatInfo),
    Entries(Vec<DirEntry>),
    /// The last bytes of a body whose earlier bytes came as `Data`.
    Bytes(ByteBuf),
    Run(RunOutcome),
    /// A new agent-side handle.
    Handle(HandleId),
    /// A byte count or file offset.
    Count(u64),
    /// Result of an ioctl.
    Ioctl {
        ret: i64,
        data: ByteBuf,
        bufs: Vec<ByteBuf>,
    },
    /// Result of a raw system call (`errno` is 0 when `ret` ≥ 0).
    Syscall {
        ret: i64,
        errno: i32,
        bufs: Vec<ByteBuf>,
    },
    /// A started process.
    Process {
        handle: HandleId,
        pid: u32,
    },
    /// Whether a process is still running.
    ProcStatus {
        running: bool,
    },
    /// One result per op of a batch.
    Batch(#[serde(deserialize_with = "nested")] Vec<Result<Reply, Failure>>),
    /// A worker's exit: its code, or 128 + signal.
    Exit(i32),
}

/// Metadata of a file, as `stat(2)` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatInfo {
    pub size: u64,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub nlink: u64,
    pub dev: u64,
    pub rdev: u64,
    pub blocks: u64,
    pub blksize: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
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
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
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
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
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
    Exited(i32),
    Signalled(i32),
    /// Killed (with its process group) because the timeout expired.
    TimedOut,
}

/// Result of [`Op::Run`]; output bytes not already sent as `Data` are here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub status: ExitStatus,
    pub stdout: ByteBuf,
    pub stderr: ByteBuf,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_view_matches_the_derived_encoding() {
        for (len, last) in [
            (0usize, true),
            (1, false),
            (127, false),
            (128, true),
            (70_000, true),
        ] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let msg = HostMsg::Data {
                id: RequestId(300 + len as u64),
                chunk: ByteBuf::from(chunk.clone()),
                last,
            };
            let frame = crate::encode(&msg).unwrap();
            let view = HostMsg::data_view(&frame[crate::FRAME_HEADER_LEN..])
                .unwrap()
                .unwrap();
            assert_eq!(view.id, RequestId(300 + len as u64));
            assert_eq!(view.chunk, &chunk[..]);
            assert_eq!(view.last, last);
        }
    }

    #[test]
    fn agent_data_view_matches_the_derived_encoding() {
        for len in [0usize, 5, 128, 300_000] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
            let frame = crate::encode(&AgentMsg::Data {
                id: RequestId(77),
                channel: 2,
                chunk: ByteBuf::from(chunk.clone()),
            })
            .unwrap();
            let body = &frame[crate::FRAME_HEADER_LEN..];
            let view = AgentMsg::data_view(body).unwrap().unwrap();
            assert_eq!(view.id, RequestId(77));
            assert_eq!(view.channel, 2);
            assert_eq!(&body[view.chunk], &chunk[..]);
        }
        let reply = crate::encode(&AgentMsg::Reply {
            id: RequestId(1),
            result: Ok(Reply::Unit),
        })
        .unwrap();
        assert!(AgentMsg::data_view(&reply[crate::FRAME_HEADER_LEN..]).is_none());
        assert!(matches!(AgentMsg::data_view(&[2, 1, 0, 9]), Some(Err(_))));
    }

    #[test]
    fn data_view_ignores_other_messages_and_rejects_garbage() {
        let call = crate::encode(&HostMsg::Call {
            id: RequestId(1),
            op: Op::Ping,
        })
        .unwrap();
        assert!(HostMsg::data_view(&call[crate::FRAME_HEADER_LEN..]).is_none());
        assert!(matches!(HostMsg::data_view(&[3, 1, 200]), Some(Err(_))));
        assert!(matches!(HostMsg::data_view(&[3, 1, 0, 1, 9]), Some(Err(_))));
    }
}
