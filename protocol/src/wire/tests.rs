//! Checks the constants of [`super`] against the derived encoding, and pins
//! the variant order of every message enum.

use serde::Serialize;
use serde_bytes::ByteBuf;

use super::*;
use crate::{
    AgentHello, AgentMsg, Failure, FailureKind, FileAttrs, HandleId, HostMsg, IoctlSpec, Op,
    OpenMode, Reply, RequestId, RunOutcome, RunSpec, SessionToken, StatInfo, StreamSource,
    SyscallSpec, TailStart, Whence, WorkerSpec,
};

/// What a failed pin tells the reader.
const HINT: &str = "append new variants at the end, or bump PROTOCOL_VERSION and update wire.rs";

/// The postcard encoding of `value`.
fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("a message encodes")
}

/// The variant index postcard writes first for `value` (one byte: every
/// index is below 128).
fn tag<T: Serialize>(value: &T) -> u8 {
    let b = bytes(value);
    assert!(
        b[0] < 0x80,
        "variant index {} takes more than one byte",
        b[0]
    );
    b[0]
}

/// Checks that `samples` name exactly the `pinned` variants, in order, and
/// that each encodes as its position in `pinned`.
fn check_pinned<T: Serialize>(
    enum_name: &str,
    pinned: &[&str],
    samples: &[T],
    name: fn(&T) -> &'static str,
) {
    for (i, sample) in samples.iter().enumerate() {
        let got = tag(sample);
        assert_eq!(
            usize::from(got),
            i,
            "{enum_name}::{} encodes as variant {got} but is sample {i}: \
             a variant was inserted or removed before it ({HINT})",
            name(sample),
        );
    }
    let names: Vec<&str> = samples.iter().map(name).collect();
    assert_eq!(
        names, pinned,
        "{enum_name}: the variants changed against the pinned list ({HINT})"
    );
}

fn path() -> Vec<u8> {
    b"/p".to_vec()
}

fn h() -> HandleId {
    HandleId(1)
}

/// The pinned variants of [`Op`], by index.
const OP_VARIANTS: &[&str] = &[
    "Ping",
    "Stat",
    "ReadFile",
    "WriteFile",
    "ListDir",
    "Mkdir",
    "Unlink",
    "Rename",
    "Run",
    "Poweroff",
    "OpenFile",
    "FileRead",
    "FileWrite",
    "FileSeek",
    "Close",
    "Ioctl",
    "Stream",
    "RunAsync",
    "ProcWait",
    "ProcSignal",
    "ProcStatus",
    "ProcStdin",
    "ProcCloseStdin",
    "Syscall",
    "Batch",
    "SpawnWorker",
    "InWorker",
    "WorkerSignal",
    "WorkerJoin",
    "Chmod",
    "Symlink",
];

/// The name of an op's variant. Exhaustive on purpose: a new variant does
/// not compile until it is named here, given a sample in [`op_samples`]
/// and pinned in [`OP_VARIANTS`].
fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Ping => "Ping",
        Op::Stat { .. } => "Stat",
        Op::ReadFile { .. } => "ReadFile",
        Op::WriteFile { .. } => "WriteFile",
        Op::ListDir { .. } => "ListDir",
        Op::Mkdir { .. } => "Mkdir",
        Op::Unlink { .. } => "Unlink",
        Op::Rename { .. } => "Rename",
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
        Op::Chmod { .. } => "Chmod",
        Op::Symlink { .. } => "Symlink",
    }
}

/// One op of every variant, in declaration order.
fn op_samples() -> Vec<Op> {
    vec![
        Op::Ping,
        Op::Stat {
            path: path(),
            follow: true,
        },
        Op::ReadFile { path: path() },
        Op::WriteFile {
            path: path(),
            attrs: FileAttrs::default(),
            data: ByteBuf::new(),
            more: false,
        },
        Op::ListDir { path: path() },
        Op::Mkdir {
            path: path(),
            parents: true,
            perm: None,
        },
        Op::Unlink { path: path() },
        Op::Rename {
            from: path(),
            to: path(),
        },
        Op::Run(RunSpec::default()),
        Op::Poweroff,
        Op::OpenFile {
            path: path(),
            mode: OpenMode::default(),
        },
        Op::FileRead {
            handle: h(),
            len: 1,
        },
        Op::FileWrite {
            handle: h(),
            data: ByteBuf::new(),
        },
        Op::FileSeek {
            handle: h(),
            offset: 0,
            whence: Whence::Set,
        },
        Op::Close { handle: h() },
        Op::Ioctl(IoctlSpec {
            handle: h(),
            cmd: 0,
            data: ByteBuf::new(),
            bufs: Vec::new(),
            ptr_offsets: Vec::new(),
        }),
        Op::Stream(StreamSource::File {
            path: path(),
            start: TailStart::End,
        }),
        Op::RunAsync(RunSpec::default()),
        Op::ProcWait {
            handle: h(),
            timeout_ms: None,
        },
        Op::ProcSignal {
            handle: h(),
            signal: 9,
            group: true,
        },
        Op::ProcStatus { handle: h() },
        Op::ProcStdin {
            handle: h(),
            data: ByteBuf::new(),
        },
        Op::ProcCloseStdin { handle: h() },
        Op::Syscall(SyscallSpec::default()),
        Op::Batch(vec![Op::Ping]),
        Op::SpawnWorker(WorkerSpec::default()),
        Op::InWorker {
            worker: h(),
            op: Box::new(Op::Ping),
        },
        Op::WorkerSignal {
            worker: h(),
            signal: 9,
        },
        Op::WorkerJoin { worker: h() },
        Op::Chmod {
            path: path(),
            mode: 0o644,
        },
        Op::Symlink {
            target: path(),
            path: path(),
        },
    ]
}

/// The pinned variants of [`Reply`], by index.
const REPLY_VARIANTS: &[&str] = &[
    "Unit",
    "Stat",
    "Entries",
    "Bytes",
    "Run",
    "Handle",
    "Count",
    "Ioctl",
    "Syscall",
    "Process",
    "ProcStatus",
    "Batch",
    "Exit",
];

/// The name of a reply's variant (exhaustive: see [`op_name`]).
fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Unit => "Unit",
        Reply::Stat(_) => "Stat",
        Reply::Entries(_) => "Entries",
        Reply::Bytes(_) => "Bytes",
        Reply::Run(_) => "Run",
        Reply::Handle(_) => "Handle",
        Reply::Count(_) => "Count",
        Reply::Ioctl { .. } => "Ioctl",
        Reply::Syscall { .. } => "Syscall",
        Reply::Process { .. } => "Process",
        Reply::ProcStatus { .. } => "ProcStatus",
        Reply::Batch(_) => "Batch",
        Reply::Exit(_) => "Exit",
    }
}

/// One reply of every variant, in declaration order.
fn reply_samples() -> Vec<Reply> {
    vec![
        Reply::Unit,
        Reply::Stat(StatInfo::default()),
        Reply::Entries(Vec::new()),
        Reply::Bytes(ByteBuf::from(b"x".to_vec())),
        Reply::Run(RunOutcome {
            status: crate::ExitStatus::Exited(0),
            stdout: ByteBuf::new(),
            stderr: ByteBuf::new(),
        }),
        Reply::Handle(h()),
        Reply::Count(3),
        Reply::Ioctl {
            ret: 0,
            data: ByteBuf::new(),
            bufs: Vec::new(),
        },
        Reply::Syscall {
            ret: 0,
            errno: 0,
            bufs: Vec::new(),
        },
        Reply::Process {
            handle: h(),
            pid: 7,
        },
        Reply::ProcStatus { running: true },
        Reply::Batch(vec![Ok(Reply::Unit)]),
        Reply::Exit(0),
    ]
}

fn hello() -> AgentHello {
    AgentHello {
        version: crate::PROTOCOL_VERSION,
        agent_version: "0".into(),
        kernel: "k".into(),
    }
}

/// The name of a host message's variant (exhaustive: see [`op_name`]).
fn host_name(msg: &HostMsg) -> &'static str {
    match msg {
        HostMsg::Hello { .. } => "Hello",
        HostMsg::HelloRejected { .. } => "HelloRejected",
        HostMsg::Call { .. } => "Call",
        HostMsg::Data { .. } => "Data",
        HostMsg::Cancel { .. } => "Cancel",
    }
}

/// The name of an agent message's variant (exhaustive: see [`op_name`]).
fn agent_name(msg: &AgentMsg) -> &'static str {
    match msg {
        AgentMsg::Hello(_) => "Hello",
        AgentMsg::Reply { .. } => "Reply",
        AgentMsg::Data { .. } => "Data",
        AgentMsg::HelloRejected { .. } => "HelloRejected",
    }
}

fn host_samples() -> Vec<HostMsg> {
    vec![
        HostMsg::Hello {
            version: crate::PROTOCOL_VERSION,
            token: SessionToken([0; SessionToken::LEN]),
        },
        HostMsg::HelloRejected {
            version: 1,
            reason: "r".into(),
        },
        HostMsg::Call {
            id: RequestId(1),
            op: Op::Ping,
        },
        HostMsg::Data {
            id: RequestId(1),
            chunk: ByteBuf::new(),
            last: true,
        },
        HostMsg::Cancel { id: RequestId(1) },
    ]
}

fn agent_samples() -> Vec<AgentMsg> {
    vec![
        AgentMsg::Hello(hello()),
        AgentMsg::Reply {
            id: RequestId(1),
            result: Ok(Reply::Unit),
        },
        AgentMsg::Data {
            id: RequestId(1),
            channel: 0,
            chunk: ByteBuf::new(),
        },
        AgentMsg::HelloRejected {
            version: 1,
            reason: "r".into(),
        },
    ]
}

#[test]
fn ops_are_pinned_in_declaration_order() {
    check_pinned("Op", OP_VARIANTS, &op_samples(), op_name);
}

#[test]
fn replies_are_pinned_in_declaration_order() {
    check_pinned("Reply", REPLY_VARIANTS, &reply_samples(), reply_name);
}

#[test]
fn messages_are_pinned_in_declaration_order() {
    check_pinned(
        "HostMsg",
        &["Hello", "HelloRejected", "Call", "Data", "Cancel"],
        &host_samples(),
        host_name,
    );
    check_pinned(
        "AgentMsg",
        &["Hello", "Reply", "Data", "HelloRejected"],
        &agent_samples(),
        agent_name,
    );
    let results: Vec<Result<Reply, Failure>> = vec![
        Ok(Reply::Unit),
        Err(Failure::other(FailureKind::Internal, "x")),
    ];
    check_pinned("Result", &["Ok", "Err"], &results, |r| match r {
        Ok(_) => "Ok",
        Err(_) => "Err",
    });
}

#[test]
fn host_constants_match_the_encoding() {
    let token = SessionToken([0; SessionToken::LEN]);
    assert_eq!(tag(&HostMsg::Hello { version: 4, token }), HOST_HELLO);
    let call = bytes(&HostMsg::Call {
        id: RequestId(5),
        op: Op::Batch(Vec::new()),
    });
    assert_eq!(call[..3], [HOST_CALL, 5, OP_BATCH]);
    let relay = bytes(&HostMsg::Call {
        id: RequestId(5),
        op: Op::InWorker {
            worker: HandleId(6),
            op: Box::new(Op::Ping),
        },
    });
    assert_eq!(relay, [HOST_CALL, 5, OP_IN_WORKER, 6, 0]);
    let data = HostMsg::Data {
        id: RequestId(1),
        chunk: ByteBuf::new(),
        last: true,
    };
    assert_eq!(tag(&data), HOST_DATA);
    assert_eq!(tag(&HostMsg::Cancel { id: RequestId(1) }), HOST_CANCEL);
}

#[test]
fn agent_constants_match_the_encoding() {
    let reply = |result| {
        bytes(&AgentMsg::Reply {
            id: RequestId(9),
            result: Ok(result),
        })
    };
    assert_eq!(
        reply(Reply::Stat(StatInfo::default()))[..4],
        [AGENT_REPLY, 9, RESULT_OK, REPLY_STAT]
    );
    assert_eq!(
        reply(Reply::Bytes(ByteBuf::from(b"ab".to_vec()))),
        [AGENT_REPLY, 9, RESULT_OK, REPLY_BYTES, 2, b'a', b'b']
    );
    assert_eq!(
        reply(Reply::Batch(Vec::new())),
        [AGENT_REPLY, 9, RESULT_OK, REPLY_BATCH, 0]
    );
    let data = AgentMsg::Data {
        id: RequestId(9),
        channel: 1,
        chunk: ByteBuf::new(),
    };
    assert_eq!(tag(&data), AGENT_DATA);
    let rejected = AgentMsg::HelloRejected {
        version: 1,
        reason: String::new(),
    };
    assert_eq!(tag(&rejected), AGENT_HELLO_REJECTED);
}

#[test]
fn op_constants_match_the_encoding() {
    let stat = Op::Stat {
        path: path(),
        follow: true,
    };
    assert_eq!(bytes(&stat), [OP_STAT, 2, b'/', b'p', 1]);
    assert_eq!(tag(&Op::Batch(Vec::new())), OP_BATCH);
    let in_worker = Op::InWorker {
        worker: h(),
        op: Box::new(Op::Ping),
    };
    assert_eq!(tag(&in_worker), OP_IN_WORKER);
}
