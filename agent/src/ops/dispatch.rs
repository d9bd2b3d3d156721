//! The one map from an [`Op`] to the code that serves it, shared by the
//! connection's call loop ([`crate::conn`]) and by batches
//! ([`super::batch`]).
//!
//! [`run`] names every op once. An op that both places serve the same way
//! is *plain*: its arm gives a [`How`] (its name, whether it may block,
//! whether a batch may run it) and the call that computes its result. The
//! ops that a connection serves differently from a batch (with `Data`
//! frames, a cancel, an upload, a reply written in place, or by ending the
//! connection) are *special*: their arm hands a [`Special`] to the
//! [`Context`], and each context serves (or refuses) it its own way.
//!
//! Adding an op: the protocol variant, its handler, and one arm here.

use provium_protocol::{FileAttrs, HandleId, Op, RunSpec, StreamSource};
use serde_bytes::ByteBuf;

use super::{file, fs, process, rawcall};
use crate::error::OpResult;
use crate::worker;

/// How a plain op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct How {
    /// The op's name, for messages.
    pub name: &'static str,
    /// `Some(thread name)` when the op may block: the connection runs it
    /// on a pooled thread. `None`: cheap, run where the call arrives.
    pub thread: Option<&'static str>,
    /// Whether a batch may run it.
    pub batched: bool,
}

impl How {
    /// Cheap and allowed in batches.
    const fn inline(name: &'static str) -> How {
        How {
            name,
            thread: None,
            batched: true,
        }
    }

    /// May block (the connection uses a pooled thread named `thread`);
    /// allowed in batches.
    const fn pooled(name: &'static str, thread: &'static str) -> How {
        How {
            name,
            thread: Some(thread),
            batched: true,
        }
    }

    /// The same, refused inside a batch.
    const fn unbatched(self) -> How {
        How {
            batched: false,
            ..self
        }
    }
}

/// An op that a connection and a batch serve differently, with its fields
/// (those of the [`Op`] variant of the same name, documented there).
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Special {
    /// A listing: in `Data` chunks on a connection, whole in a batch.
    ListDir { path: Vec<u8> },
    /// A write: possibly continued by uploads on a connection; a batch
    /// refuses one with `more`.
    WriteFile {
        path: Vec<u8>,
        attrs: FileAttrs,
        data: ByteBuf,
        more: bool,
    },
    /// A whole file: streamed and cancellable on a connection, bounded by
    /// what the reply can carry in a batch.
    ReadFile { path: Vec<u8> },
    /// A process run to completion: streamed and cancellable on a
    /// connection, output bounded in a batch, which refuses `stdin_more`.
    Run(RunSpec),
    /// One read of a file handle: into the connection's buffer (or on a
    /// thread when the file may block).
    FileRead { handle: HandleId, len: u64 },
    /// One write to a file handle (on a thread when the file may block).
    FileWrite { handle: HandleId, data: ByteBuf },
    /// Closing a handle: a file inline, anything else on a thread.
    Close { handle: HandleId },
    /// Ends the connection after its reply. Connection only.
    Poweroff,
    /// Follows a source until cancelled. Connection only.
    Stream(StreamSource),
    /// Waits for a process (its output may need `Data`). Connection only.
    ProcWait {
        handle: HandleId,
        timeout_ms: Option<u64>,
    },
    /// A batch (taken apart from its frame). Connection only.
    Batch,
    /// An op relayed to a worker. Connection only.
    InWorker { worker: HandleId, op: Box<Op> },
}

/// Where an op runs: the connection's call loop, or a batch entry.
pub trait Context {
    /// What serving an op gives the caller.
    type Out;

    /// Serves a plain op whose result `call` computes.
    fn plain<F>(&mut self, how: How, call: F) -> Self::Out
    where
        F: FnOnce() -> OpResult + Send + 'static;

    /// Serves a special op; `name` is its name for messages.
    fn special(&mut self, name: &'static str, op: Special) -> Self::Out;
}

/// Serves `op` in `cx`.
pub fn run<C: Context>(op: Op, cx: &mut C) -> C::Out {
    use How as H;
    match op {
        Op::Ping => cx.plain(H::inline("Ping"), || Ok(provium_protocol::Reply::Unit)),
        Op::Stat { path, follow } => cx.plain(H::inline("Stat"), move || fs::stat(&path, follow)),
        Op::ReadFile { path } => cx.special("ReadFile", Special::ReadFile { path }),
        Op::WriteFile {
            path,
            attrs,
            data,
            more,
        } => {
            let name = if more {
                "WriteFile with more"
            } else {
                "WriteFile"
            };
            let op = Special::WriteFile {
                path,
                attrs,
                data,
                more,
            };
            cx.special(name, op)
        }
        Op::ListDir { path } => cx.special("ListDir", Special::ListDir { path }),
        Op::Mkdir {
            path,
            parents,
            perm,
        } => cx.plain(H::inline("Mkdir"), move || fs::mkdir(&path, parents, perm)),
        Op::Unlink { path } => cx.plain(H::inline("Unlink"), move || fs::unlink(&path)),
        Op::Rename { from, to } => cx.plain(H::inline("Rename"), move || fs::rename(&from, &to)),
        Op::Run(spec) => {
            let name = if spec.stdin_more {
                "Run with stdin_more"
            } else {
                "Run"
            };
            cx.special(name, Special::Run(spec))
        }
        Op::Poweroff => cx.special("Poweroff", Special::Poweroff),
        Op::OpenFile { path, mode } => {
            cx.plain(H::inline("OpenFile"), move || file::open(&path, &mode))
        }
        Op::FileRead { handle, len } => cx.special("FileRead", Special::FileRead { handle, len }),
        Op::FileWrite { handle, data } => {
            cx.special("FileWrite", Special::FileWrite { handle, data })
        }
        Op::FileSeek {
            handle,
            offset,
            whence,
        } => cx.plain(H::inline("FileSeek"), move || {
            file::seek(handle, offset, whence)
        }),
        Op::Close { handle } => cx.special("Close", Special::Close { handle }),
        Op::Ioctl(spec) => cx.plain(H::pooled("Ioctl", "ioctl"), move || file::ioctl(spec)),
        Op::Stream(source) => cx.special("Stream", Special::Stream(source)),
        Op::RunAsync(spec) => cx.plain(H::pooled("RunAsync", "run-async"), move || {
            process::run_async(spec)
        }),
        Op::ProcWait { handle, timeout_ms } => {
            cx.special("ProcWait", Special::ProcWait { handle, timeout_ms })
        }
        Op::ProcSignal {
            handle,
            signal,
            group,
        } => cx.plain(H::inline("ProcSignal"), move || {
            process::signal(handle, signal, group)
        }),
        Op::ProcStatus { handle } => {
            cx.plain(H::inline("ProcStatus"), move || process::status(handle))
        }
        Op::ProcStdin { handle, data } => cx.plain(H::pooled("ProcStdin", "stdin"), move || {
            process::stdin_write(handle, &data)
        }),
        Op::ProcCloseStdin { handle } => cx.plain(H::inline("ProcCloseStdin"), move || {
            process::close_stdin(handle)
        }),
        Op::Syscall(spec) => cx.plain(H::pooled("Syscall", "syscall"), move || {
            rawcall::syscall(spec)
        }),
        Op::Batch(_) => cx.special("Batch", Special::Batch),
        Op::SpawnWorker(spec) => {
            let how = H::pooled("SpawnWorker", "spawn-worker").unbatched();
            cx.plain(how, move || worker::spawn_worker(&spec))
        }
        Op::InWorker { worker, op } => cx.special("InWorker", Special::InWorker { worker, op }),
        Op::WorkerSignal { worker, signal } => {
            let how = H::inline("WorkerSignal").unbatched();
            cx.plain(how, move || worker::signal(worker, signal))
        }
        Op::WorkerJoin { worker } => {
            let how = H::pooled("WorkerJoin", "join").unbatched();
            cx.plain(how, move || worker::join(worker))
        }
        Op::Chmod { path, mode } => cx.plain(H::inline("Chmod"), move || fs::chmod(&path, mode)),
        Op::Symlink { target, path } => {
            cx.plain(H::inline("Symlink"), move || fs::symlink(&target, &path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provium_protocol::{IoctlSpec, OpenMode, SyscallSpec, TailStart, Whence, WorkerSpec};

    /// A context that records how each op would be served, running none.
    struct Probe;

    impl Context for Probe {
        /// The op's name, and where it runs: `inline`, a thread name, or
        /// `special`; then whether a batch runs it as a plain op.
        type Out = (&'static str, &'static str, bool);

        fn plain<F>(&mut self, how: How, _call: F) -> Self::Out
        where
            F: FnOnce() -> OpResult + Send + 'static,
        {
            (how.name, how.thread.unwrap_or("inline"), how.batched)
        }

        fn special(&mut self, name: &'static str, _op: Special) -> Self::Out {
            (name, "special", false)
        }
    }

    #[test]
    fn every_op_is_served_as_before() {
        let h = HandleId(1);
        let p = || b"/p".to_vec();
        let cases = [
            (Op::Ping, ("Ping", "inline", true)),
            (
                Op::Stat {
                    path: p(),
                    follow: true,
                },
                ("Stat", "inline", true),
            ),
            (Op::ReadFile { path: p() }, ("ReadFile", "special", false)),
            (
                Op::WriteFile {
                    path: p(),
                    attrs: FileAttrs::default(),
                    data: ByteBuf::new(),
                    more: false,
                },
                ("WriteFile", "special", false),
            ),
            (
                Op::WriteFile {
                    path: p(),
                    attrs: FileAttrs::default(),
                    data: ByteBuf::new(),
                    more: true,
                },
                ("WriteFile with more", "special", false),
            ),
            (Op::ListDir { path: p() }, ("ListDir", "special", false)),
            (
                Op::Mkdir {
                    path: p(),
                    parents: false,
                    perm: None,
                },
                ("Mkdir", "inline", true),
            ),
            (Op::Unlink { path: p() }, ("Unlink", "inline", true)),
            (
                Op::Rename { from: p(), to: p() },
                ("Rename", "inline", true),
            ),
            (Op::Run(RunSpec::default()), ("Run", "special", false)),
            (
                Op::Run(RunSpec {
                    stdin_more: true,
                    ..RunSpec::default()
                }),
                ("Run with stdin_more", "special", false),
            ),
            (Op::Poweroff, ("Poweroff", "special", false)),
            (
                Op::OpenFile {
                    path: p(),
                    mode: OpenMode::default(),
                },
                ("OpenFile", "inline", true),
            ),
            (
                Op::FileRead { handle: h, len: 1 },
                ("FileRead", "special", false),
            ),
            (
                Op::FileWrite {
                    handle: h,
                    data: ByteBuf::new(),
                },
                ("FileWrite", "special", false),
            ),
            (
                Op::FileSeek {
                    handle: h,
                    offset: 0,
                    whence: Whence::Set,
                },
                ("FileSeek", "inline", true),
            ),
            (Op::Close { handle: h }, ("Close", "special", false)),
            (
                Op::Ioctl(IoctlSpec {
                    handle: h,
                    cmd: 0,
                    data: ByteBuf::new(),
                    bufs: Vec::new(),
                    ptr_offsets: Vec::new(),
                }),
                ("Ioctl", "ioctl", true),
            ),
            (
                Op::Stream(StreamSource::File {
                    path: p(),
                    start: TailStart::End,
                }),
                ("Stream", "special", false),
            ),
            (
                Op::RunAsync(RunSpec::default()),
                ("RunAsync", "run-async", true),
            ),
            (
                Op::ProcWait {
                    handle: h,
                    timeout_ms: None,
                },
                ("ProcWait", "special", false),
            ),
            (
                Op::ProcSignal {
                    handle: h,
                    signal: 9,
                    group: false,
                },
                ("ProcSignal", "inline", true),
            ),
            (Op::ProcStatus { handle: h }, ("ProcStatus", "inline", true)),
            (
                Op::ProcStdin {
                    handle: h,
                    data: ByteBuf::new(),
                },
                ("ProcStdin", "stdin", true),
            ),
            (
                Op::ProcCloseStdin { handle: h },
                ("ProcCloseStdin", "inline", true),
            ),
            (
                Op::Syscall(SyscallSpec::default()),
                ("Syscall", "syscall", true),
            ),
            (Op::Batch(Vec::new()), ("Batch", "special", false)),
            (
                Op::SpawnWorker(WorkerSpec::default()),
                ("SpawnWorker", "spawn-worker", false),
            ),
            (
                Op::InWorker {
                    worker: h,
                    op: Box::new(Op::Ping),
                },
                ("InWorker", "special", false),
            ),
            (
                Op::WorkerSignal {
                    worker: h,
                    signal: 9,
                },
                ("WorkerSignal", "inline", false),
            ),
            (Op::WorkerJoin { worker: h }, ("WorkerJoin", "join", false)),
            (
                Op::Chmod {
                    path: p(),
                    mode: 0o644,
                },
                ("Chmod", "inline", true),
            ),
            (
                Op::Symlink {
                    target: p(),
                    path: p(),
                },
                ("Symlink", "inline", true),
            ),
        ];
        for (op, expected) in cases {
            let shown = format!("{op:?}");
            assert_eq!(run(op, &mut Probe), expected, "{shown}");
        }
    }
}
