//! Batches (`Op::Batch`): ops run one after the other on one pooled thread,
//! answered by one [`Reply::Batch`] (a failure does not stop the rest).
//!
//! An entry must complete with its reply alone: no `Data` before it, no
//! frames after it, nothing that only makes sense as the connection's last
//! act. Allowed: `Ping`, `Stat`, `ReadFile`, `WriteFile` (without `more`),
//! `ListDir`, `Mkdir`, `Unlink`, `Rename`, `Run` (without `stdin_more`),
//! `Syscall`, the file-handle ops (`OpenFile`, `FileRead`, `FileWrite`,
//! `FileSeek`, `Ioctl`, `Close` of any handle) and the process ops that
//! answer at once (`RunAsync`, `ProcSignal`, `ProcStatus`, `ProcStdin`,
//! `ProcCloseStdin`). Refused per entry with a bad request: `Stream`,
//! `Batch`, uploads that continue in `Data` frames, `ProcWait` (its output
//! may need `Data` frames and a wait is one-shot, so an oversized result
//! would be lost), worker control (`SpawnWorker`, `InWorker`,
//! `WorkerSignal`, `WorkerJoin`) and `Poweroff`.
//!
//! The whole reply is one frame, so bulky results share a budget of
//! [`INLINE_LIMIT`] bytes: a `ReadFile` or `Run` that would go past what
//! is left fails with `EFBIG` (read it outside a batch instead).

use std::fs::File;
use std::io::Read;

use provium_protocol::{Failure, Op, Reply};
use serde_bytes::ByteBuf;

use super::{file, fs, path, process, rawcall, run, upload};
use crate::error::{bad_request, io_failure, OpResult};

/// Bytes of bulky results (file bodies, process output, buffers) one batch
/// reply may carry; the frame limit is 4 MiB.
pub const INLINE_LIMIT: usize = 3 * 1024 * 1024;

/// Runs a batch → [`Reply::Batch`].
pub fn batch(ops: Vec<Op>) -> OpResult {
    let mut left = INLINE_LIMIT;
    let results = ops
        .into_iter()
        .map(|op| {
            let name = op_name(&op);
            let result = one(op, left);
            let size = encoded_size(&result);
            if size > left {
                return Err(too_big(name, left));
            }
            left -= size;
            result
        })
        .collect();
    Ok(Reply::Batch(results))
}

fn too_big(name: &str, left: usize) -> Failure {
    Failure::os(
        libc::EFBIG,
        format!(
            "{name}: the result exceeds the {left} bytes left in this batch's reply \
             (at most {INLINE_LIMIT} in all); run it outside a batch"
        ),
    )
}

/// Runs one entry; `left` is what the reply can still carry.
fn one(op: Op, left: usize) -> OpResult {
    match op {
        Op::Ping => Ok(Reply::Unit),
        Op::Stat { path, follow } => fs::stat(&path, follow),
        Op::ReadFile { path } => read_file(&path, left),
        Op::WriteFile {
            path,
            perm,
            data,
            more: false,
        } => upload::write_whole(&path, perm, &data),
        Op::ListDir { path } => fs::list_dir(&path),
        Op::Mkdir {
            path,
            parents,
            perm,
        } => fs::mkdir(&path, parents, perm),
        Op::Unlink { path } => fs::unlink(&path),
        Op::Rename { from, to } => fs::rename(&from, &to),
        Op::Run(spec) if !spec.stdin_more => run::run_inline(spec, left),
        Op::Syscall(spec) => rawcall::syscall(spec),
        Op::OpenFile { path, mode } => file::open(&path, &mode),
        Op::FileRead { handle, len } => file::read(handle, len),
        Op::FileWrite { handle, data } => file::write(handle, &data),
        Op::FileSeek {
            handle,
            offset,
            whence,
        } => file::seek(handle, offset, whence),
        Op::Close { handle } => super::close(handle),
        Op::Ioctl(spec) => file::ioctl(spec),
        Op::RunAsync(spec) => process::run_async(spec),
        Op::ProcSignal { handle, signal } => process::signal(handle, signal),
        Op::ProcStatus { handle } => process::status(handle),
        Op::ProcStdin { handle, data } => process::stdin_write(handle, &data),
        Op::ProcCloseStdin { handle } => process::close_stdin(handle),
        other => Err(bad_request(format!(
            "`{}` cannot appear inside a batch",
            op_name(&other)
        ))),
    }
}

/// Reads a whole file of at most `limit` bytes.
fn read_file(p: &[u8], limit: usize) -> OpResult {
    let file = File::open(path(p)).map_err(|e| io_failure(&e))?;
    let mut body = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| io_failure(&e))?;
    if body.len() > limit {
        return Err(too_big("ReadFile", limit));
    }
    Ok(Reply::Bytes(ByteBuf::from(body)))
}

/// About how many bytes a result adds to the reply (bulky parts exactly,
/// the rest by a generous bound).
fn encoded_size(result: &OpResult) -> usize {
    const SMALL: usize = 160;
    let bufs = |bufs: &[ByteBuf]| bufs.iter().map(|b| b.len() + 10).sum::<usize>();
    match result {
        Ok(Reply::Bytes(b)) => b.len() + 16,
        Ok(Reply::Run(o)) => o.stdout.len() + o.stderr.len() + 32,
        Ok(Reply::Entries(e)) => e.iter().map(|d| d.name.len() + 8).sum::<usize>() + 16,
        Ok(Reply::Syscall { bufs: b, .. }) => bufs(b) + 32,
        Ok(Reply::Ioctl { data, bufs: b, .. }) => data.len() + bufs(b) + 32,
        Ok(_) => SMALL,
        Err(f) => f.message.len() + 32,
    }
}

/// The name of an op, for messages.
pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Ping => "Ping",
        Op::Stat { .. } => "Stat",
        Op::ReadFile { .. } => "ReadFile",
        Op::WriteFile { more: true, .. } => "WriteFile with more",
        Op::WriteFile { .. } => "WriteFile",
        Op::ListDir { .. } => "ListDir",
        Op::Mkdir { .. } => "Mkdir",
        Op::Unlink { .. } => "Unlink",
        Op::Rename { .. } => "Rename",
        Op::Run(spec) if spec.stdin_more => "Run with stdin_more",
        Op::Run(_) => "Run",
        Op::Poweroff => "Poweroff",
        Op::OpenFile { .. } => "OpenFile",
        Op::FileRead { .. } => "FileRead",
        Op::FileWrite { .. } => "FileWrite",
        Op::FileSeek { .. } => "FileSeek",
        Op::Close { .. } => "Close",
        Op::Ioctl(_) => "Ioctl",
        Op::Stream(_) => "Stream",
        Op::RunAsync(_) => "RunAsync",
        Op::ProcWait { .. } => "ProcWait",
        Op::ProcSignal { .. } => "ProcSignal",
        Op::ProcStatus { .. } => "ProcStatus",
        Op::ProcStdin { .. } => "ProcStdin",
        Op::ProcCloseStdin { .. } => "ProcCloseStdin",
        Op::Syscall(_) => "Syscall",
        Op::Batch(_) => "Batch",
        Op::SpawnWorker(_) => "SpawnWorker",
        Op::InWorker { .. } => "InWorker",
        Op::WorkerSignal { .. } => "WorkerSignal",
        Op::WorkerJoin { .. } => "WorkerJoin",
    }
}
