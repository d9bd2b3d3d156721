//! Property-based fuzzing of the framing layer and the message decoders:
//! whatever bytes a peer sends, decoding must end in a value or an error,
//! never in a panic, an abort or an allocation sized by a claimed length.
//! Valid messages must survive encode → frame → decode unchanged, and the
//! copy-free `data_view` fast paths must agree with the full decoder.
//!
//! Run with `cargo test -p provium-protocol --test fuzz` (or `-- fuzz`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

use proptest::collection::vec;
use proptest::prelude::*;
use provium_protocol::frame::body_len;
use provium_protocol::*;
use serde_bytes::ByteBuf;

// ---- Allocation accounting ----

/// Counts the bytes this thread allocates, so a property can check that a
/// decoder's memory use does not follow a length the input merely claims.
struct Tracking;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + size as i64);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live.get())));
    });
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - size as i64));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping only touches const-initialised thread locals (no allocation).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note_free(layout.size());
            note_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// What `f` allocated on this thread: (peak bytes live at once above what
/// was live before, largest single allocation).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|l| l.set(0));
    let out = f();
    let peak = (PEAK.with(Cell::get) - base).max(0) as usize;
    (out, peak, LARGEST.with(Cell::get))
}

/// The most a decoder may allocate for a body of `n` bytes, whatever
/// lengths it claims: linear in `n`. Every element of a sequence takes at
/// least one input byte, a sequence is pre-sized only as far as the input
/// left could fill it (postcard's size hint), nested sequences count the
/// same bytes once per level, and a growing `Vec` may briefly hold twice
/// its elements. (So a 4 MiB frame can still cost a few hundred MB, e.g. a
/// `Reply::Batch` of two-byte `Ok(Unit)`s at 104 bytes each: bounded by
/// [`MAX_FRAME_LEN`], not by anything the peer claims.)
fn decode_budget(n: usize) -> usize {
    4096 + 2 * (MAX_NESTING + 2) * std::mem::size_of::<HostMsg>() * n
}

// ---- Strategies ----

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn buf(max: usize) -> impl Strategy<Value = ByteBuf> {
    bytes(max).prop_map(ByteBuf::from)
}

/// Mostly small numbers, whose varints are short, plus the extremes.
fn num() -> impl Strategy<Value = u64> {
    prop_oneof![0..300u64, any::<u64>(), Just(u64::MAX)]
}

fn id() -> impl Strategy<Value = RequestId> {
    num().prop_map(RequestId)
}

fn handle() -> impl Strategy<Value = HandleId> {
    num().prop_map(HandleId)
}

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    (
        bytes(16),
        vec(buf(8), 0..4),
        vec((buf(6), buf(6)), 0..3),
        any::<bool>(),
        proptest::option::of(buf(8)),
        buf(32),
        any::<bool>(),
        proptest::option::of(num()),
        proptest::option::of(num()),
    )
        .prop_map(
            |(program, args, env, env_clear, cwd, stdin, stdin_more, timeout_ms, max_output)| {
                RunSpec {
                    program,
                    args,
                    env,
                    env_clear,
                    cwd,
                    stdin,
                    stdin_more,
                    timeout_ms,
                    max_output,
                }
            },
        )
}

fn open_mode() -> impl Strategy<Value = OpenMode> {
    (any::<[bool; 6]>(), proptest::option::of(any::<u32>())).prop_map(|(b, perm)| OpenMode {
        read: b[0],
        write: b[1],
        append: b[2],
        create: b[3],
        truncate: b[4],
        exclusive: b[5],
        perm,
    })
}

fn whence() -> impl Strategy<Value = Whence> {
    prop_oneof![Just(Whence::Set), Just(Whence::Cur), Just(Whence::End)]
}

fn stream_source() -> impl Strategy<Value = StreamSource> {
    let start = prop_oneof![
        Just(TailStart::End),
        num().prop_map(TailStart::Offset),
        num().prop_map(TailStart::FromEnd),
    ];
    prop_oneof![
        (bytes(16), start).prop_map(|(path, start)| StreamSource::File { path, start }),
        handle().prop_map(|handle| StreamSource::Handle { handle }),
        (handle(), any::<u8>())
            .prop_map(|(handle, channel)| StreamSource::Process { handle, channel }),
    ]
}

fn syscall_spec() -> impl Strategy<Value = SyscallSpec> {
    (
        any::<i64>(),
        any::<[u64; 6]>(),
        vec(buf(8), 0..3),
        bytes(4),
        vec(
            (any::<u32>(), any::<u32>(), num()).prop_map(|(parent, child, offset)| Nested {
                parent,
                child,
                offset,
            }),
            0..3,
        ),
    )
        .prop_map(|(nr, args, bufs, ptrs, nested)| SyscallSpec {
            nr,
            args,
            bufs,
            ptrs,
            nested,
        })
}

/// Every op that does not contain another op.
fn leaf_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Ping),
        (bytes(24), any::<bool>()).prop_map(|(path, follow)| Op::Stat { path, follow }),
        bytes(24).prop_map(|path| Op::ReadFile { path }),
        (
            bytes(16),
            proptest::option::of(any::<u32>()),
            buf(64),
            any::<bool>()
        )
            .prop_map(|(path, perm, data, more)| Op::WriteFile {
                path,
                attrs: FileAttrs {
                    perm,
                    uid: perm.map(|p| p >> 3),
                    gid: None
                },
                data,
                more
            }),
        (bytes(16), any::<u32>()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        (bytes(16), bytes(16)).prop_map(|(target, path)| Op::Symlink { target, path }),
        bytes(16).prop_map(|path| Op::ListDir { path }),
        (bytes(16), any::<bool>(), proptest::option::of(any::<u32>())).prop_map(
            |(path, parents, perm)| Op::Mkdir {
                path,
                parents,
                perm
            }
        ),
        bytes(16).prop_map(|path| Op::Unlink { path }),
        (bytes(16), bytes(16)).prop_map(|(from, to)| Op::Rename { from, to }),
        run_spec().prop_map(Op::Run),
        Just(Op::Poweroff),
        (bytes(16), open_mode()).prop_map(|(path, mode)| Op::OpenFile { path, mode }),
        (handle(), num()).prop_map(|(handle, len)| Op::FileRead { handle, len }),
        (handle(), buf(32)).prop_map(|(handle, data)| Op::FileWrite { handle, data }),
        (handle(), any::<i64>(), whence()).prop_map(|(handle, offset, whence)| {
            Op::FileSeek {
                handle,
                offset,
                whence,
            }
        }),
        handle().prop_map(|handle| Op::Close { handle }),
        (
            handle(),
            num(),
            buf(16),
            vec(buf(8), 0..3),
            vec(num(), 0..3)
        )
            .prop_map(
                |(handle, cmd, data, bufs, ptr_offsets)| Op::Ioctl(IoctlSpec {
                    handle,
                    cmd,
                    data,
                    bufs,
                    ptr_offsets,
                })
            ),
        stream_source().prop_map(Op::Stream),
        run_spec().prop_map(Op::RunAsync),
        (handle(), proptest::option::of(num()))
            .prop_map(|(handle, timeout_ms)| Op::ProcWait { handle, timeout_ms }),
        (handle(), any::<i32>(), any::<bool>()).prop_map(|(handle, signal, group)| {
            Op::ProcSignal {
                handle,
                signal,
                group,
            }
        }),
        handle().prop_map(|handle| Op::ProcStatus { handle }),
        (handle(), buf(32)).prop_map(|(handle, data)| Op::ProcStdin { handle, data }),
        handle().prop_map(|handle| Op::ProcCloseStdin { handle }),
        syscall_spec().prop_map(Op::Syscall),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(vec(any::<u32>(), 0..4)),
            proptest::option::of(buf(8)),
            vec(text(6), 0..3),
        )
            .prop_map(
                |(uid, gid, groups, cwd, unshare)| Op::SpawnWorker(WorkerSpec {
                    uid,
                    gid,
                    groups,
                    cwd,
                    unshare,
                })
            ),
        (handle(), any::<i32>()).prop_map(|(worker, signal)| Op::WorkerSignal { worker, signal }),
        handle().prop_map(|worker| Op::WorkerJoin { worker }),
    ]
}

/// Any op, batches and worker calls nested a few levels deep.
fn op() -> impl Strategy<Value = Op> {
    leaf_op().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Op::Batch),
            (handle(), inner).prop_map(|(worker, op)| Op::InWorker {
                worker,
                op: Box::new(op),
            }),
        ]
    })
}

fn host_msg() -> impl Strategy<Value = HostMsg> {
    prop_oneof![
        1 => (any::<u32>(), any::<[u8; 32]>())
            .prop_map(|(version, t)| HostMsg::Hello { version, token: SessionToken(t) }),
        1 => (any::<u32>(), text(16))
            .prop_map(|(version, reason)| HostMsg::HelloRejected { version, reason }),
        4 => (id(), op()).prop_map(|(id, op)| HostMsg::Call { id, op }),
        3 => (id(), buf(300), any::<bool>())
            .prop_map(|(id, chunk, last)| HostMsg::Data { id, chunk, last }),
        1 => id().prop_map(|id| HostMsg::Cancel { id }),
    ]
}

fn failure() -> impl Strategy<Value = Failure> {
    let kind = prop_oneof![
        Just(FailureKind::Os),
        Just(FailureKind::BadRequest),
        Just(FailureKind::Unsupported),
        Just(FailureKind::UnknownHandle),
        Just(FailureKind::Internal),
    ];
    (kind, any::<i32>(), text(24)).prop_map(|(kind, errno, message)| Failure {
        kind,
        errno,
        message,
    })
}

fn stat_info() -> impl Strategy<Value = StatInfo> {
    (any::<[u64; 7]>(), any::<[u32; 3]>(), any::<[i64; 3]>()).prop_map(|(u, w, t)| StatInfo {
        size: u[0],
        mode: w[0],
        uid: w[1],
        gid: w[2],
        ino: u[1],
        nlink: u[2],
        dev: u[3],
        rdev: u[4],
        blocks: u[5],
        blksize: u[6],
        atime_ns: t[0],
        mtime_ns: t[1],
        ctime_ns: t[2],
    })
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        any::<i32>().prop_map(ExitStatus::Exited),
        any::<i32>().prop_map(ExitStatus::Signalled),
        Just(ExitStatus::TimedOut),
    ]
}

fn leaf_reply() -> impl Strategy<Value = Reply> {
    let entry = (bytes(12), any::<u32>()).prop_map(|(name, mode)| DirEntry {
        name,
        entry_type: EntryType::from_mode(mode),
    });
    prop_oneof![
        Just(Reply::Unit),
        stat_info().prop_map(Reply::Stat),
        vec(entry, 0..4).prop_map(Reply::Entries),
        buf(64).prop_map(Reply::Bytes),
        (exit_status(), buf(32), buf(32)).prop_map(|(status, stdout, stderr)| {
            Reply::Run(RunOutcome {
                status,
                stdout,
                stderr,
            })
        }),
        handle().prop_map(Reply::Handle),
        num().prop_map(Reply::Count),
        (any::<i64>(), buf(16), vec(buf(8), 0..3)).prop_map(|(ret, data, bufs)| Reply::Ioctl {
            ret,
            data,
            bufs
        }),
        (any::<i64>(), any::<i32>(), vec(buf(8), 0..3))
            .prop_map(|(ret, errno, bufs)| Reply::Syscall { ret, errno, bufs }),
        (handle(), any::<u32>()).prop_map(|(handle, pid)| Reply::Process { handle, pid }),
        any::<bool>().prop_map(|running| Reply::ProcStatus { running }),
        any::<i32>().prop_map(Reply::Exit),
    ]
}

fn result() -> impl Strategy<Value = Result<Reply, Failure>> {
    let reply = leaf_reply().prop_recursive(2, 16, 4, |inner| {
        vec(
            prop_oneof![inner.prop_map(Ok), failure().prop_map(Err)],
            0..5,
        )
        .prop_map(Reply::Batch)
    });
    prop_oneof![3 => reply.prop_map(Ok), 1 => failure().prop_map(Err)]
}

fn agent_msg() -> impl Strategy<Value = AgentMsg> {
    prop_oneof![
        1 => (any::<u32>(), text(12), text(12)).prop_map(|(version, agent_version, kernel)| {
            AgentMsg::Hello(AgentHello {
                version,
                agent_version,
                kernel,
            })
        }),
        4 => (id(), result()).prop_map(|(id, result)| AgentMsg::Reply { id, result }),
        3 => (id(), any::<u8>(), buf(300))
            .prop_map(|(id, channel, chunk)| AgentMsg::Data { id, channel, chunk }),
        1 => (any::<u32>(), text(16))
            .prop_map(|(version, reason)| AgentMsg::HelloRejected { version, reason }),
    ]
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Writes a long varint (a huge claimed length or index) at a position.
    HugeVarint(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => any::<usize>().prop_map(Mutation::HugeVarint),
    ];
    vec(one, 1..5)
}

fn mutate(mut b: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for m in edits {
        let len = b.len();
        let at = |i: usize, extra: usize| i % (len + extra).max(1);
        match *m {
            Mutation::Set(i, v) if !b.is_empty() => {
                let i = at(i, 0);
                b[i] = v;
            }
            Mutation::Insert(i, v) => {
                let i = at(i, 1);
                b.insert(i, v);
            }
            Mutation::Remove(i) if !b.is_empty() => {
                let i = at(i, 0);
                b.remove(i);
            }
            Mutation::Truncate(i) => {
                let i = at(i, 1);
                b.truncate(i);
            }
            Mutation::HugeVarint(i) => {
                let i = at(i, 1);
                b.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => {}
        }
    }
    b
}

/// Frame bodies worth decoding: pure noise, and valid bodies of either
/// direction with a few edits (which reach far deeper into the decoders).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(64),
        (host_msg(), mutations()).prop_map(|(m, e)| mutate(body_of(&m), &e)),
        (agent_msg(), mutations()).prop_map(|(m, e)| mutate(body_of(&m), &e)),
    ]
}

fn body_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let frame = encode(msg).expect("a generated message encodes");
    frame[FRAME_HEADER_LEN..].to_vec()
}

// ---- Byte streams ----

/// A reader that hands out its bytes in the given read sizes (0 = an
/// `Interrupted` error, which readers must retry), then whatever is left.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    steps: Vec<usize>,
    step: usize,
}

impl Read for Chunked {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = match self.steps.get(self.step) {
            Some(0) => {
                self.step += 1;
                return Err(io::ErrorKind::Interrupted.into());
            }
            Some(&n) => n,
            None => usize::MAX,
        };
        self.step += 1;
        let n = want.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A frame header claiming `len` bytes.
fn header(len: u32) -> [u8; FRAME_HEADER_LEN] {
    len.to_le_bytes()
}

/// Streams of frames: correct ones, ones whose header claims more or fewer
/// bytes than follow (up to 4 GiB), and noise.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let claim = prop_oneof![
        4 => 0..64u32,
        1 => Just(MAX_FRAME_LEN as u32),
        1 => Just(MAX_FRAME_LEN as u32 + 1),
        1 => any::<u32>(),
    ];
    let piece = prop_oneof![
        3 => host_msg().prop_map(|m| encode(&m).expect("encodes")),
        2 => (claim, bytes(80)).prop_map(|(len, body)| {
            let mut f = header(len).to_vec();
            f.extend(body);
            f
        }),
        1 => bytes(6),
    ];
    vec(piece, 0..6).prop_map(|p| p.concat())
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![Just(0usize), 1..8usize, 1..200usize], 0..24)
}

/// Cases for the cheap in-memory properties.
const CASES: u32 = 4000;

/// `cases` per property, unless `PROPTEST_CASES` asks for a longer run.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        // No regressions file: a failure prints its minimal input, which
        // belongs in a named unit test.
        failure_persistence: None,
        ..default
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn fuzz_body_len_checks_every_header(h in any::<[u8; 4]>()) {
        let claimed = u32::from_le_bytes(h) as usize;
        match body_len(h) {
            Ok(len) => prop_assert!(len == claimed && len <= MAX_FRAME_LEN),
            Err(FrameError::TooLarge { len, max }) => {
                prop_assert!(len == claimed && claimed > MAX_FRAME_LEN && max == MAX_FRAME_LEN)
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn fuzz_read_frame_on_any_stream(data in stream(), steps in read_sizes()) {
        let total = data.len();
        let mut r = Chunked { data, pos: 0, steps, step: 0 };
        let mut consumed = 0;
        loop {
            let (got, _, largest) = measure(|| read_frame(&mut r));
            prop_assert!(largest <= MAX_FRAME_LEN, "allocated {largest} bytes");
            match got {
                Ok(Some(body)) => {
                    prop_assert!(body.len() <= MAX_FRAME_LEN);
                    consumed += FRAME_HEADER_LEN + body.len();
                    prop_assert_eq!(consumed, r.pos);
                }
                Ok(None) => {
                    prop_assert_eq!(consumed, total);
                    break;
                }
                Err(FrameError::Truncated { got, want }) => {
                    prop_assert!(got < want);
                    prop_assert_eq!(r.pos, total);
                    break;
                }
                Err(FrameError::TooLarge { len, .. }) => {
                    prop_assert!(len > MAX_FRAME_LEN);
                    break;
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }

    #[test]
    fn fuzz_decoders_on_any_body(b in body()) {
        let budget = decode_budget(b.len());
        let (host, peak, _) = measure(|| decode::<HostMsg>(&b));
        prop_assert!(peak <= budget, "HostMsg: {peak} bytes for a {}-byte body", b.len());
        let (agent, peak, _) = measure(|| decode::<AgentMsg>(&b));
        prop_assert!(peak <= budget, "AgentMsg: {peak} bytes for a {}-byte body", b.len());

        // What decodes re-encodes to something that decodes the same.
        if let Ok(m) = &host {
            prop_assert_eq!(&decode::<HostMsg>(&body_of(m)).expect("re-decodes"), m);
        }
        if let Ok(m) = &agent {
            prop_assert_eq!(&decode::<AgentMsg>(&body_of(m)).expect("re-decodes"), m);
        }

        // The fast paths accept nothing the full decoder reads differently.
        match HostMsg::data_view(&b) {
            None => prop_assert!(b.first() != Some(&3)),
            Some(Ok(v)) => {
                let expected = HostMsg::Data {
                    id: v.id,
                    chunk: ByteBuf::from(v.chunk.to_vec()),
                    last: v.last,
                };
                prop_assert_eq!(host.as_ref().ok(), Some(&expected));
            }
            Some(Err(_)) => {}
        }
        match AgentMsg::data_view(&b) {
            None => prop_assert!(b.first() != Some(&2)),
            Some(Ok(v)) => {
                prop_assert!(v.chunk.start <= v.chunk.end && v.chunk.end == b.len());
                let expected = AgentMsg::Data {
                    id: v.id,
                    channel: v.channel,
                    chunk: ByteBuf::from(b[v.chunk.clone()].to_vec()),
                };
                prop_assert_eq!(agent.as_ref().ok(), Some(&expected));
            }
            Some(Err(_)) => {}
        }
    }
}

proptest! {
    #![proptest_config(config(CASES / 2))]

    #[test]
    fn fuzz_host_msg_round_trips(msg in host_msg()) {
        let frame = encode(&msg).expect("encodes");
        let mut cursor = &frame[..];
        let body = read_frame(&mut cursor).expect("reads").expect("a frame");
        prop_assert!(cursor.is_empty());
        prop_assert_eq!(&decode::<HostMsg>(&body).expect("decodes"), &msg);
        match (&msg, HostMsg::data_view(&body)) {
            (HostMsg::Data { id, chunk, last }, Some(Ok(v))) => {
                prop_assert_eq!(v, DataView { id: *id, chunk: &chunk[..], last: *last });
            }
            (HostMsg::Data { .. }, other) => prop_assert!(false, "data_view gave {other:?}"),
            (_, view) => prop_assert!(view.is_none()),
        }
    }

    #[test]
    fn fuzz_agent_msg_round_trips(msg in agent_msg()) {
        let frame = encode(&msg).expect("encodes");
        let mut cursor = &frame[..];
        let body = read_frame(&mut cursor).expect("reads").expect("a frame");
        prop_assert!(cursor.is_empty());
        prop_assert_eq!(&decode::<AgentMsg>(&body).expect("decodes"), &msg);
        match (&msg, AgentMsg::data_view(&body)) {
            (AgentMsg::Data { id, channel, chunk }, Some(Ok(v))) => {
                prop_assert_eq!((v.id, v.channel), (*id, *channel));
                prop_assert_eq!(&body[v.chunk], &chunk[..]);
            }
            (AgentMsg::Data { .. }, other) => prop_assert!(false, "data_view gave {other:?}"),
            (_, view) => prop_assert!(view.is_none()),
        }
    }

    #[test]
    fn fuzz_nesting_is_bounded(depth in 0..3 * MAX_NESTING, kinds in any::<u64>()) {
        // `depth` batches and worker calls around a ping, as the host would
        // encode them, and the agent's batch reply of the same depth.
        let mut op = Op::Ping;
        let mut reply = Reply::Unit;
        for level in 0..depth {
            op = if (kinds >> (level % 64)) & 1 == 0 {
                Op::Batch(vec![op])
            } else {
                Op::InWorker { worker: HandleId(1), op: Box::new(op) }
            };
            reply = Reply::Batch(vec![Ok(reply)]);
        }
        let call = HostMsg::Call { id: RequestId(1), op };
        let answer = AgentMsg::Reply { id: RequestId(1), result: Ok(reply) };
        let host = decode::<HostMsg>(&body_of(&call));
        let agent = decode::<AgentMsg>(&body_of(&answer));
        if depth <= MAX_NESTING {
            prop_assert_eq!(host.expect("decodes"), call);
            prop_assert_eq!(agent.expect("decodes"), answer);
        } else {
            prop_assert!(matches!(host, Err(FrameError::Malformed(_))));
            prop_assert!(matches!(agent, Err(FrameError::Malformed(_))));
        }
    }
}

/// The frame that found the stack overflow: a 4 MiB body of nothing but
/// `Batch` tags and one-element lengths, and the agent's reply equivalent.
#[test]
fn fuzz_deepest_frames_are_errors() {
    let mut call = vec![2u8, 1];
    while call.len() < MAX_FRAME_LEN - 1 {
        call.extend([24, 1]);
    }
    call.push(0);
    assert!(matches!(
        decode::<HostMsg>(&call),
        Err(FrameError::Malformed(_))
    ));
    let mut reply = vec![1u8, 1, 0];
    while reply.len() < MAX_FRAME_LEN - 2 {
        reply.extend([11, 1, 0]);
    }
    reply.push(0);
    assert!(matches!(
        decode::<AgentMsg>(&reply),
        Err(FrameError::Malformed(_))
    ));
}
