//! Batches (`Op::Batch`): ops run one after the other on one pooled thread,
//! answered by one [`Reply::Batch`] (a failure does not stop the rest).
//!
//! An entry must complete with its reply alone: no `Data` before it, no
//! frames after it, nothing that only makes sense as the connection's last
//! act. Allowed: `Ping`, `Stat`, `ReadFile`, `WriteFile` (without `more`),
//! `ListDir`, `Mkdir`, `Unlink`, `Rename`, `Chmod`, `Symlink`, `Run` (without `stdin_more`),
//! `Syscall`, the file-handle ops (`OpenFile`, `FileRead`, `FileWrite`,
//! `FileSeek`, `Ioctl`, `Close` of any handle) and the process ops that
//! answer at once (`RunAsync`, `ProcSignal`, `ProcStatus`, `ProcStdin`,
//! `ProcCloseStdin`). Refused per entry with a bad request: `Stream`,
//! `Batch`, uploads that continue in `Data` frames, `ProcWait` (its output
//! may need `Data` frames and a wait is one-shot, so an oversized result
//! would be lost), worker control (`SpawnWorker`, `InWorker`,
//! `WorkerSignal`, `WorkerJoin`) and `Poweroff`.
//!
//! The encoded results (those sent ahead and those in the reply) share a
//! budget of [`INLINE_LIMIT`] bytes, so that no frame outgrows the limit: an entry whose result would go past what is
//! left fails with `EFBIG` instead (a `ReadFile` or `Run` is told the limit
//! up front, so it never reads or collects more than that). `libc::EFBIG`
//! is used only as the number sent to the host.
//!
//! Batches are processed as a stream: each op is decoded from the host's
//! frame, run, and its result encoded straight into the outgoing bytes;
//! once those pass [`AHEAD_LEN`] they go ahead of the reply as a `Data`
//! frame, so the host works on them while the guest runs the next ops. Under
//! TCG this matters: decoding 1,000 ops into a `Vec<Op>` first means a
//! 152 KB allocation (mmap'd by musl, page-faulted in, unmapped again) and
//! moving 1,000 results of 104 bytes each before encoding them.

use std::fs::File;
use std::io::Read;

use provium_protocol::wire::{
    AGENT_REPLY, HOST_CALL, OP_BATCH, OP_STAT, REPLY_BATCH, REPLY_STAT, RESULT_OK,
};
use provium_protocol::{Failure, Op, Reply, RequestId, StatInfo, CH_BODY, FRAME_HEADER_LEN};
use serde_bytes::ByteBuf;

use super::dispatch::{self, How, Special};
use super::{file, fs, path, run, upload};
use crate::error::{bad_request, internal, io_failure, OpResult};
use crate::sender::{encode_into, finish_frame, push_varint, Sender};

/// Bytes of bulky results (file bodies, process output, buffers) one batch
/// reply may carry; the frame limit is 4 MiB.
pub const INLINE_LIMIT: usize = 3 * 1024 * 1024;

/// The call id and the encoded op list of a `Call { op: Batch(ops) }`
/// frame body; `None` for any other frame.
pub fn parse_call(body: &[u8]) -> Option<(RequestId, &[u8])> {
    let rest = body.strip_prefix(&[HOST_CALL])?;
    let (id, rest) = postcard::take_from_bytes::<RequestId>(rest).ok()?;
    let ops = rest.strip_prefix(&[OP_BATCH])?;
    Some((id, ops))
}

/// Runs the encoded op list of batch call `id` and sends the results:
/// runs of them ahead as `Data` frames once they pass [`AHEAD_LEN`]
/// bytes, the rest in the reply.
pub fn run(sender: &Sender, id: RequestId, ops: &[u8]) {
    let mut ahead = |run: &[u8]| sender.data(id, CH_BODY, run);
    let sent = match run_encoded(id, ops, &mut ahead) {
        Ok(frame) => sender.send_raw(&frame),
        Err(failure) => sender.reply(id, Err(failure)),
    };
    if let Err(e) = sent {
        debug!("{id}: reply not sent: {e}");
    }
}

/// Runs an encoded op list as batch call 0 would, results sent ahead
/// dropped → the reply frame (the agent's `--bench-batch`, which times a
/// batch without a transport).
pub fn run_list(ops: &[u8]) -> Result<Vec<u8>, Failure> {
    run_encoded(RequestId(0), ops, &mut |_| Ok(()))
}

/// Encoded results a batch sends ahead of its reply in one `Data` frame
/// (a whole number of entries, on [`CH_BODY`]), once it has that many.
///
/// Measured reason: the host turns each result into Lua tables (~2 µs an
/// entry, ~2 ms for 1,000 stats) and, with one reply, could only start
/// once the guest had run the last entry; with runs sent ahead it builds
/// them while the guest runs the next ones (see BENCHMARKS.md, issue 12).
pub const AHEAD_LEN: usize = 8 * 1024;

/// Decodes, runs and encodes entry after entry; hands each run of at least
/// [`AHEAD_LEN`] encoded results to `ahead` → the reply frame with the
/// results not sent ahead.
fn run_encoded(
    id: RequestId,
    ops: &[u8],
    ahead: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Vec<u8>, Failure> {
    let malformed = |i: u64| bad_request(format!("batch: entry {i} cannot be decoded"));
    let (count, mut rest) =
        postcard::take_from_bytes::<u64>(ops).map_err(|_| bad_request("batch: no op count"))?;
    // The results not yet sent, and how many entries they are.
    let mut out = Vec::with_capacity(256);
    let mut in_out = 0u64;
    let mut left = INLINE_LIMIT;
    for i in 0..count {
        // Stats first, taken apart in place: moving an `Op` (a large enum)
        // out of `take_entry` for each of them costs measurably under TCG.
        let (name, result) = if let Some((p, follow, tail)) = take_stat(rest) {
            rest = tail;
            ("Stat", fs::stat(p, follow))
        } else {
            let (op, tail) = postcard::take_from_bytes::<Op>(rest).map_err(|_| malformed(i))?;
            rest = tail;
            one(op, left)
        };
        let before = out.len();
        out = match &result {
            Ok(Reply::Stat(st)) => {
                push_stat(&mut out, st);
                out
            }
            _ => encode_into(out, &result)?,
        };
        let size = out.len() - before;
        if size > left {
            out.truncate(before);
            let failure: OpResult = Err(too_big(name, left));
            out = encode_into(out, &failure)?;
        }
        left = left.saturating_sub(out.len() - before);
        in_out += 1;
        if out.len() >= AHEAD_LEN && i + 1 < count {
            // A host that is gone shows when the reply is sent.
            if let Err(e) = ahead(&out) {
                debug!("{id}: results sent ahead lost: {e}");
            }
            out.clear();
            in_out = 0;
        }
    }
    if !rest.is_empty() {
        return Err(bad_request("batch: trailing bytes after the last entry"));
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + 24 + out.len());
    frame.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    frame.push(AGENT_REPLY);
    push_varint(&mut frame, id.0);
    frame.push(RESULT_OK);
    frame.push(REPLY_BATCH);
    push_varint(&mut frame, in_out);
    frame.extend_from_slice(&out);
    finish_frame(&mut frame).map_err(|e| internal(format!("batch reply: {e}")))?;
    Ok(frame)
}

/// One decoded entry of a batch (the tests' decoder of a whole op list).
#[cfg(test)]
#[derive(Debug, PartialEq)]
enum Entry<'a> {
    /// A `Stat`, its path borrowed from the frame ([`take_stat`]).
    Stat(&'a [u8], bool),
    /// Any other op.
    Op(Op),
}

/// Decodes the entry at the start of `b` → the entry and the bytes after
/// it; `None` when `b` does not start with an encoded op.
#[cfg(test)]
fn take_entry(b: &[u8]) -> Option<(Entry<'_>, &[u8])> {
    if let Some((p, follow, tail)) = take_stat(b) {
        return Some((Entry::Stat(p, follow), tail));
    }
    let (op, tail) = postcard::take_from_bytes::<Op>(b).ok()?;
    Some((Entry::Op(op), tail))
}

/// An encoded `Op::Stat { path, follow }` taken apart in place →
/// `(path, follow, rest)`; `None` for anything else (serde then decodes it,
/// or reports it malformed). By hand for the reason given at `push_stat`,
/// and so that the path is borrowed from the frame instead of allocated.
fn take_stat(b: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let rest = b.strip_prefix(&[OP_STAT])?;
    let (len, rest) = postcard::take_from_bytes::<u32>(rest).ok()?;
    let len = usize::try_from(len).ok()?;
    if rest.len() <= len {
        return None;
    }
    let (path, rest) = rest.split_at(len);
    let follow = match rest[0] {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some((path, follow, &rest[1..]))
}

/// Appends `Ok(Reply::Stat(st))` as postcard encodes it. By hand because
/// a batch of stats is the common bulk case: through serde, each of the 13
/// varints costs a call and a copy (~700 instructions per entry measured
/// with callgrind, against ~150 here), and under TCG every instruction of
/// the agent counts.
fn push_stat(out: &mut Vec<u8>, st: &StatInfo) {
    let zigzag = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
    out.reserve(2 + 13 * 10);
    out.push(RESULT_OK);
    out.push(REPLY_STAT);
    for v in [
        st.size,
        u64::from(st.mode),
        u64::from(st.uid),
        u64::from(st.gid),
        st.ino,
        st.nlink,
        st.dev,
        st.rdev,
        st.blocks,
        st.blksize,
        zigzag(st.atime_ns),
        zigzag(st.mtime_ns),
        zigzag(st.ctime_ns),
    ] {
        push_varint(out, v);
    }
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

/// Runs one entry; `left` is what the reply can still carry → the op's
/// name (for messages) and its result.
fn one(op: Op, left: usize) -> (&'static str, OpResult) {
    let mut entry = BatchEntry { left, name: "" };
    let result = dispatch::run(op, &mut entry);
    (entry.name, result)
}

/// A batch entry as a [`dispatch::Context`]: runs what can complete with
/// its reply alone, on the batch's thread, and refuses the rest.
struct BatchEntry {
    /// What the reply can still carry.
    left: usize,
    /// The name of the op served last.
    name: &'static str,
}

impl dispatch::Context for BatchEntry {
    type Out = OpResult;

    fn plain<F>(&mut self, how: How, call: F) -> OpResult
    where
        F: FnOnce() -> OpResult + Send + 'static,
    {
        self.name = how.name;
        if how.batched {
            call()
        } else {
            Err(refused(how.name))
        }
    }

    fn special(&mut self, name: &'static str, op: Special) -> OpResult {
        self.name = name;
        match op {
            Special::ListDir { path } => fs::list_dir(&path),
            Special::WriteFile {
                path,
                attrs,
                data,
                more: false,
            } => upload::write_whole(&path, attrs, &data),
            Special::ReadFile { path } => read_file(&path, self.left),
            Special::Run(spec) if !spec.stdin_more => run::run_inline(spec, self.left),
            Special::FileRead { handle, len } => file::read(handle, len),
            Special::FileWrite { handle, data } => file::write(handle, &data),
            Special::Close { handle } => super::close(handle),
            Special::WriteFile { .. }
            | Special::Run(_)
            | Special::Poweroff
            | Special::Stream(_)
            | Special::ProcWait { .. }
            | Special::Batch
            | Special::InWorker { .. } => Err(refused(name)),
        }
    }
}

/// The failure of an op that cannot be batched.
fn refused(name: &str) -> Failure {
    bad_request(format!("`{name}` cannot appear inside a batch"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use provium_protocol::{encode, HostMsg};

    #[test]
    fn ops_that_need_the_connection_are_refused_by_name() {
        let h = provium_protocol::HandleId(1);
        let cases = [
            (Op::Poweroff, "Poweroff"),
            (
                Op::WriteFile {
                    path: b"/nonexistent/x".to_vec(),
                    attrs: Default::default(),
                    data: ByteBuf::new(),
                    more: true,
                },
                "WriteFile with more",
            ),
            (
                Op::Run(provium_protocol::RunSpec {
                    program: b"/nonexistent".to_vec(),
                    stdin_more: true,
                    ..Default::default()
                }),
                "Run with stdin_more",
            ),
            (
                Op::SpawnWorker(provium_protocol::WorkerSpec::default()),
                "SpawnWorker",
            ),
            (
                Op::InWorker {
                    worker: h,
                    op: Box::new(Op::Ping),
                },
                "InWorker",
            ),
            (
                Op::WorkerSignal {
                    worker: h,
                    signal: 0,
                },
                "WorkerSignal",
            ),
            (Op::WorkerJoin { worker: h }, "WorkerJoin"),
        ];
        for (op, name) in cases {
            let (got, result) = one(op, INLINE_LIMIT);
            assert_eq!(got, name);
            assert_eq!(
                result,
                Err(bad_request(format!(
                    "`{name}` cannot appear inside a batch"
                )))
            );
        }
        assert_eq!(one(Op::Ping, 0), ("Ping", Ok(Reply::Unit)));
    }

    #[test]
    fn hand_encoded_stat_matches_postcard() {
        let cases = [
            StatInfo::default(),
            StatInfo {
                size: 1 << 40,
                mode: 0o100644,
                uid: 65534,
                gid: u32::MAX,
                ino: u64::MAX,
                nlink: 1,
                dev: 0x803,
                rdev: 0,
                blocks: 8,
                blksize: 4096,
                atime_ns: -1,
                mtime_ns: i64::MAX,
                ctime_ns: i64::MIN,
            },
        ];
        for st in cases {
            let mut ours = Vec::new();
            push_stat(&mut ours, &st);
            let result: OpResult = Ok(Reply::Stat(st));
            assert_eq!(ours, postcard::to_allocvec(&result).unwrap());
        }
    }

    #[test]
    fn hand_decoded_stat_matches_postcard() {
        for (path, follow) in [
            (&b"/"[..], true),
            (&[b'x'; 300][..], false),
            (&b""[..], true),
        ] {
            let op = Op::Stat {
                path: path.to_vec(),
                follow,
            };
            let mut bytes = postcard::to_allocvec(&op).unwrap();
            bytes.push(0xAA);
            assert_eq!(take_stat(&bytes), Some((path, follow, &[0xAA][..])));
            // Truncated or with a bad bool: left to serde.
            assert_eq!(take_stat(&bytes[..bytes.len() - 2]), None);
            let n = bytes.len();
            bytes[n - 2] = 7;
            assert_eq!(take_stat(&bytes), None);
        }
        let ping = postcard::to_allocvec(&Op::Ping).unwrap();
        assert_eq!(take_stat(&ping), None);
    }

    #[test]
    fn run_list_answers_each_entry_in_one_reply_frame() {
        let dir = std::env::temp_dir();
        let ops = vec![
            Op::Stat {
                path: dir.as_os_str().as_encoded_bytes().to_vec(),
                follow: true,
            },
            Op::Ping,
            Op::Stat {
                path: b"/nonexistent/provium-batch".to_vec(),
                follow: false,
            },
        ];
        let frame = run_list(&postcard::to_allocvec(&ops).unwrap()).unwrap();
        let msg: provium_protocol::AgentMsg =
            provium_protocol::decode(&frame[FRAME_HEADER_LEN..]).unwrap();
        let provium_protocol::AgentMsg::Reply {
            id,
            result: Ok(Reply::Batch(results)),
        } = msg
        else {
            panic!("not a batch reply: {msg:?}");
        };
        assert_eq!(id, RequestId(0));
        assert_eq!(results.len(), 3);
        let meta = std::fs::metadata(&dir).unwrap();
        assert!(
            matches!(&results[0], Ok(Reply::Stat(st)) if st.ino == std::os::unix::fs::MetadataExt::ino(&meta))
        );
        assert_eq!(results[1], Ok(Reply::Unit));
        assert!(matches!(&results[2], Err(f) if f.errno == libc::ENOENT));
    }

    #[test]
    fn long_batches_send_whole_runs_of_results_ahead_in_order() {
        // Stats of distinct paths, so that each result can be told apart.
        let dir = std::env::temp_dir().join(format!("provium-ahead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 600usize;
        let mut ops = Vec::new();
        for i in 0..n {
            let p = dir.join(format!("f{i}"));
            std::fs::write(&p, vec![0u8; i]).unwrap();
            ops.push(Op::Stat {
                path: p.as_os_str().as_encoded_bytes().to_vec(),
                follow: true,
            });
        }
        let mut runs: Vec<Vec<u8>> = Vec::new();
        let frame = run_encoded(
            RequestId(9),
            &postcard::to_allocvec(&ops).unwrap(),
            &mut |run| {
                runs.push(run.to_vec());
                Ok(())
            },
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(runs.len() >= 2, "{} runs sent ahead", runs.len());
        let mut sizes = Vec::new();
        for run in &runs {
            assert!(run.len() >= AHEAD_LEN);
            let mut rest = &run[..];
            while !rest.is_empty() {
                let (r, tail) = postcard::take_from_bytes::<OpResult>(rest).unwrap();
                let Ok(Reply::Stat(st)) = r else {
                    panic!("not a stat: {r:?}")
                };
                sizes.push(st.size);
                rest = tail;
            }
        }
        let msg: provium_protocol::AgentMsg =
            provium_protocol::decode(&frame[FRAME_HEADER_LEN..]).unwrap();
        let provium_protocol::AgentMsg::Reply {
            id: RequestId(9),
            result: Ok(Reply::Batch(last)),
        } = msg
        else {
            panic!("not the batch reply: {msg:?}");
        };
        assert!(!last.is_empty());
        for r in last {
            let Ok(Reply::Stat(st)) = r else {
                panic!("not a stat: {r:?}")
            };
            sizes.push(st.size);
        }
        assert_eq!(sizes, (0..n as u64).collect::<Vec<_>>());
    }

    #[test]
    fn parse_call_finds_the_op_list() {
        let ops = vec![
            Op::Ping,
            Op::Stat {
                path: b"/".to_vec(),
                follow: true,
            },
        ];
        for id in [1u64, 300, u64::MAX] {
            let frame = encode(&HostMsg::Call {
                id: RequestId(id),
                op: Op::Batch(ops.clone()),
            })
            .unwrap();
            let (got, list) = parse_call(&frame[FRAME_HEADER_LEN..]).unwrap();
            assert_eq!(got, RequestId(id));
            assert_eq!(list, postcard::to_allocvec(&ops).unwrap());
        }
        let ping = encode(&HostMsg::Call {
            id: RequestId(1),
            op: Op::Ping,
        })
        .unwrap();
        assert!(parse_call(&ping[FRAME_HEADER_LEN..]).is_none());
    }
}

/// Property-based fuzzing of the batch decoders (run with `-- fuzz`). Only
/// decoding: nothing here runs an op.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use provium_protocol::{encode, FileAttrs, HandleId, HostMsg, RunSpec, Whence};

    /// The batch loop of `run_encoded` without running anything: the
    /// entries of an encoded op list, or `None` when it is malformed.
    fn decode_list(ops: &[u8]) -> Option<Vec<Entry<'_>>> {
        let (count, mut rest) = postcard::take_from_bytes::<u64>(ops).ok()?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let (entry, tail) = take_entry(rest)?;
            // Every entry takes input: a huge count ends with the bytes.
            assert!(tail.len() < rest.len(), "an entry consumed nothing");
            rest = tail;
            entries.push(entry);
        }
        rest.is_empty().then_some(entries)
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..max)
    }

    /// A mix of the ops batches carry and some they refuse.
    fn op() -> impl Strategy<Value = Op> {
        let leaf = prop_oneof![
            1 => Just(Op::Ping),
            4 => (bytes(300), any::<bool>()).prop_map(|(path, follow)| Op::Stat { path, follow }),
            1 => bytes(24).prop_map(|path| Op::ReadFile { path }),
            1 => (bytes(16), proptest::option::of(any::<u32>()), bytes(64), any::<bool>()).prop_map(
                |(path, perm, data, more)| Op::WriteFile {
                    path,
                    attrs: FileAttrs { perm, uid: None, gid: None },
                    data: data.into(),
                    more,
                }
            ),
            1 => (bytes(16), bytes(16)).prop_map(|(from, to)| Op::Rename { from, to }),
            1 => (bytes(16), vec(bytes(8), 0..3), any::<bool>()).prop_map(|(program, args, more)| {
                Op::Run(RunSpec {
                    program,
                    args: args.into_iter().map(Into::into).collect(),
                    stdin_more: more,
                    ..RunSpec::default()
                })
            }),
            1 => (any::<u64>(), any::<i64>()).prop_map(|(h, offset)| Op::FileSeek {
                handle: HandleId(h),
                offset,
                whence: Whence::End,
            }),
            1 => any::<u64>().prop_map(|h| Op::Close { handle: HandleId(h) }),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..3).prop_map(Op::Batch),
                (any::<u64>(), inner).prop_map(|(w, op)| Op::InWorker {
                    worker: HandleId(w),
                    op: Box::new(op),
                }),
            ]
        })
    }

    fn entry_of(op: &Op) -> Entry<'_> {
        match op {
            Op::Stat { path, follow } => Entry::Stat(path, *follow),
            other => Entry::Op(other.clone()),
        }
    }

    /// Valid encodings with a few bytes set, inserted or cut off, or a
    /// one-byte varint stretched to two (postcard reads `[0x82, 0x00]` as
    /// 2 too); or noise.
    fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            bytes(48),
            (valid, vec((any::<usize>(), any::<u8>(), 0..4u8), 1..4)).prop_map(|(mut b, edits)| {
                for (at, v, how) in edits {
                    let i = at % (b.len() + 1);
                    match how {
                        0 if i < b.len() => b[i] = v,
                        1 => b.insert(i, v),
                        2 => b.truncate(i),
                        _ if i < b.len() && b[i] < 0x80 => {
                            b[i] |= 0x80;
                            b.insert(i + 1, 0);
                        }
                        _ => {}
                    }
                }
                b
            }),
        ]
    }

    /// `cases` per property, unless `PROPTEST_CASES` asks for a longer run.
    fn config(cases: u32) -> ProptestConfig {
        let default = ProptestConfig::default();
        ProptestConfig {
            cases: if std::env::var_os("PROPTEST_CASES").is_some() {
                default.cases
            } else {
                cases
            },
            failure_persistence: None,
            ..default
        }
    }

    proptest! {
        #![proptest_config(config(3000))]

        #[test]
        fn fuzz_op_list_round_trips(ops in vec(op(), 0..8)) {
            let encoded = postcard::to_allocvec(&ops).expect("encodes");
            let expected: Vec<Entry<'_>> = ops.iter().map(entry_of).collect();
            prop_assert_eq!(decode_list(&encoded), Some(expected));
        }

        #[test]
        fn fuzz_op_list_decodes_any_bytes(
            b in mutated(vec(op(), 0..6).prop_map(|ops| postcard::to_allocvec(&ops).expect("encodes")))
        ) {
            // No panic, and every entry consumes input (checked inside).
            let _ = decode_list(&b);
        }

        #[test]
        fn fuzz_hand_decoded_stat_agrees_with_postcard(
            b in mutated(op().prop_map(|op| postcard::to_allocvec(&op).expect("encodes")))
        ) {
            let by_hand = take_stat(&b);
            let by_serde = postcard::take_from_bytes::<Op>(&b).ok();
            match (by_hand, by_serde) {
                (Some((path, follow, tail)), serde) => {
                    let expected = Op::Stat { path: path.to_vec(), follow };
                    prop_assert_eq!(serde, Some((expected, tail)));
                }
                (None, Some((Op::Stat { .. }, _))) => {
                    // Only a tag not in its shortest form is left to serde.
                    prop_assert!(b[0] != OP_STAT, "a Stat the hand decoder refuses");
                }
                (None, _) => {}
            }
        }

        #[test]
        fn fuzz_parse_call_finds_every_batch(id in any::<u64>(), op in op()) {
            let frame = encode(&HostMsg::Call { id: RequestId(id), op: op.clone() })
                .expect("encodes");
            let found = parse_call(&frame[FRAME_HEADER_LEN..]);
            match op {
                Op::Batch(ops) => {
                    let list = postcard::to_allocvec(&ops).expect("encodes");
                    prop_assert_eq!(found, Some((RequestId(id), &list[..])));
                }
                _ => prop_assert_eq!(found, None),
            }
        }

        #[test]
        fn fuzz_parse_call_on_any_body(
            b in mutated((any::<u64>(), vec(op(), 0..4)).prop_map(|(id, ops)| {
                let frame = encode(&HostMsg::Call { id: RequestId(id), op: Op::Batch(ops) })
                    .expect("encodes");
                frame[FRAME_HEADER_LEN..].to_vec()
            }))
        ) {
            // Whatever the fast path finds, the full decoder reads the same
            // call; what it misses is no batch call, or one whose variants
            // or id are not in postcard's shortest form (which the host
            // never sends; the agent then answers a bad request).
            let full = provium_protocol::decode::<HostMsg>(&b).ok();
            match parse_call(&b) {
                Some((id, ops)) => {
                    prop_assert!(b.ends_with(ops));
                    let _ = decode_list(ops);
                    if let Some(HostMsg::Call { id: full_id, op }) = full {
                        prop_assert_eq!(full_id, id);
                        prop_assert!(matches!(op, Op::Batch(_)));
                    }
                }
                None => {
                    if let Some(HostMsg::Call { id, op: Op::Batch(_) }) = full {
                        let mut head = vec![HOST_CALL];
                        head.extend(postcard::to_allocvec(&id).expect("encodes"));
                        head.push(OP_BATCH);
                        prop_assert!(!b.starts_with(&head), "a batch call parse_call does not see");
                    }
                }
            }
        }
    }
}
