//! Streams of files (inotify), handles and processes.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{bb, bytes, expect_ack, open, start, Host, TempDir};
use provium_protocol::{
    AgentMsg, FailureKind, HandleId, HostMsg, Op, Reply, RequestId, RunSpec, StreamSource,
    TailStart, Whence, CH_BODY, CH_STDERR, CH_STDOUT,
};

/// Starts a tail and waits for its acknowledgement.
fn tail(h: &mut Host, p: &Path, start: TailStart) -> RequestId {
    let id = h.start_call(Op::Stream(StreamSource::File {
        path: bytes(p),
        start,
    }));
    expect_ack(h, id);
    id
}

/// Starts a stream of a handle or a process and waits for its
/// acknowledgement.
fn stream(h: &mut Host, source: StreamSource) -> RequestId {
    let id = h.start_call(Op::Stream(source));
    expect_ack(h, id);
    id
}

fn append(p: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(data).unwrap();
}

/// Reads `Data` frames of `id` until `want` bytes arrived; returns them.
fn expect_data(h: &mut Host, id: RequestId, channel: u8, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match h.recv() {
            AgentMsg::Data {
                id: i,
                channel: c,
                chunk,
            } => {
                assert_eq!((i, c), (id, channel));
                got.extend_from_slice(&chunk);
            }
            other => panic!("expected data for {id}, got {other:?}"),
        }
    }
    assert_eq!(got.len(), want, "more bytes than expected");
    got
}

/// Collects `Data` of `id` until its reply.
fn until_reply(h: &mut Host, id: RequestId) -> (Vec<u8>, Result<Reply, provium_protocol::Failure>) {
    let mut got = Vec::new();
    loop {
        match h.recv() {
            AgentMsg::Data { id: i, chunk, .. } if i == id => got.extend_from_slice(&chunk),
            AgentMsg::Reply { id: i, result } if i == id => return (got, result),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Appends `n` times and measures each append-to-arrival latency.
fn latencies(h: &mut Host, id: RequestId, p: &Path, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let line = format!("line {i}\n");
        let t = Instant::now();
        append(p, line.as_bytes());
        let got = expect_data(h, id, CH_BODY, line.len());
        out.push(t.elapsed());
        assert_eq!(got, line.as_bytes());
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

fn report(what: &str, lat: &mut [Duration]) -> Duration {
    lat.sort();
    let max = *lat.last().unwrap();
    println!(
        "{what}: append→host latency over {} appends: median {:?}, max {:?}",
        lat.len(),
        lat[lat.len() / 2],
        max
    );
    max
}

#[test]
fn tail_from_end_sees_only_new_bytes_promptly() {
    let mut h = start();
    let dir = TempDir::new("tail-end");
    let p = dir.path("log");
    std::fs::write(&p, b"old line\n").unwrap();
    // Acknowledged: the end position is fixed, appends from now on count.
    let id = tail(&mut h, &p, TailStart::End);
    let mut lat = latencies(&mut h, id, &p, 20);
    let max = report("tail from end", &mut lat);
    assert!(max < Duration::from_millis(500), "{max:?}");
    h.send(&HostMsg::Cancel { id });
    let (rest, result) = until_reply(&mut h, id);
    assert!(rest.is_empty());
    assert_eq!(result, Ok(Reply::Unit));
}

#[test]
fn tail_from_offset_zero_then_follows() {
    let mut h = start();
    let dir = TempDir::new("tail-zero");
    let p = dir.path("log");
    let backlog: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &backlog).unwrap();
    let id = tail(&mut h, &p, TailStart::Offset(0));
    assert_eq!(expect_data(&mut h, id, CH_BODY, backlog.len()), backlog);
    let mut lat = latencies(&mut h, id, &p, 20);
    let max = report("tail from 0", &mut lat);
    assert!(max < Duration::from_millis(500), "{max:?}");
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id).1, Ok(Reply::Unit));
}

#[test]
fn tail_from_end_minus_n_and_offset() {
    let mut h = start();
    let dir = TempDir::new("tail-from-end");
    let p = dir.path("log");
    std::fs::write(&p, b"0123456789").unwrap();
    let id = tail(&mut h, &p, TailStart::FromEnd(4));
    assert_eq!(expect_data(&mut h, id, CH_BODY, 4), b"6789");
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id).1, Ok(Reply::Unit));

    let id = tail(&mut h, &p, TailStart::FromEnd(100));
    assert_eq!(expect_data(&mut h, id, CH_BODY, 10), b"0123456789");
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id).1, Ok(Reply::Unit));

    let id = tail(&mut h, &p, TailStart::Offset(7));
    assert_eq!(expect_data(&mut h, id, CH_BODY, 3), b"789");
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id).1, Ok(Reply::Unit));

    // Past the end counts as truncated below the position (the source
    // was open: acknowledged, then ended).
    let id = tail(&mut h, &p, TailStart::Offset(11));
    assert_eq!(until_reply(&mut h, id), (vec![], Ok(Reply::Unit)));
}

#[test]
fn missing_file_fails_at_once() {
    let mut h = start();
    let dir = TempDir::new("tail-missing");
    let (data, result) = h.call_full(Op::Stream(StreamSource::File {
        path: bytes(&dir.path("nope")),
        start: TailStart::End,
    }));
    assert!(data.0.is_empty());
    let err = result.unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn truncation_ends_a_tail() {
    let mut h = start();
    let dir = TempDir::new("tail-trunc");
    let p = dir.path("log");
    std::fs::write(&p, b"some content\n").unwrap();
    let id = tail(&mut h, &p, TailStart::Offset(0));
    assert_eq!(expect_data(&mut h, id, CH_BODY, 13), b"some content\n");
    let t = Instant::now();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(2)
        .unwrap();
    let truncated = t.elapsed();
    let (rest, result) = until_reply(&mut h, id);
    println!(
        "truncation: set_len took {truncated:?}, the stream ended {:?} after it",
        t.elapsed() - truncated
    );
    assert!(rest.is_empty());
    assert_eq!(result, Ok(Reply::Unit));
}

#[test]
fn tail_follows_the_inode_across_rename_and_unlink() {
    let mut h = start();
    let dir = TempDir::new("tail-inode");
    let p = dir.path("log");
    std::fs::write(&p, b"").unwrap();
    let id = tail(&mut h, &p, TailStart::Offset(0));
    let mut writer = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::fs::rename(&p, dir.path("moved")).unwrap();
    writer.write_all(b"after rename\n").unwrap();
    assert_eq!(expect_data(&mut h, id, CH_BODY, 13), b"after rename\n");
    std::fs::remove_file(dir.path("moved")).unwrap();
    writer.write_all(b"after unlink\n").unwrap();
    assert_eq!(expect_data(&mut h, id, CH_BODY, 13), b"after unlink\n");
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id).1, Ok(Reply::Unit));
}

#[test]
fn handle_stream_shares_the_cursor_and_ends_on_close() {
    let mut h = start();
    let dir = TempDir::new("fd-stream");
    let p = dir.path("log");
    std::fs::write(&p, b"abcdef").unwrap();
    let f = open(&mut h, &p, "r");
    assert_eq!(
        h.call(Op::FileRead { handle: f, len: 2 }),
        Ok(Reply::Bytes(bb("ab")))
    );
    let id = stream(&mut h, StreamSource::Handle { handle: f });
    assert_eq!(expect_data(&mut h, id, CH_BODY, 4), b"cdef");
    let t = Instant::now();
    append(&p, b"ghi");
    assert_eq!(expect_data(&mut h, id, CH_BODY, 3), b"ghi");
    println!("handle stream: append→host {:?}", t.elapsed());
    // The stream moved the handle's cursor.
    let seek = h.start_call(Op::FileSeek {
        handle: f,
        offset: 0,
        whence: Whence::Cur,
    });
    match h.recv() {
        AgentMsg::Reply { id: i, result } => {
            assert_eq!(i, seek);
            assert_eq!(result, Ok(Reply::Count(9)));
        }
        other => panic!("{other:?}"),
    }
    // Closing the handle ends the stream.
    let close = h.start_call(Op::Close { handle: f });
    let mut replies = Vec::new();
    for _ in 0..2 {
        match h.recv() {
            AgentMsg::Reply { id: i, result } => replies.push((i, result)),
            other => panic!("{other:?}"),
        }
    }
    replies.sort_by_key(|(i, _)| *i);
    assert_eq!(
        replies,
        vec![(id, Ok(Reply::Unit)), (close, Ok(Reply::Unit))]
    );
}

#[test]
fn handle_stream_of_a_fifo_ends_at_eof() {
    let mut h = start();
    let dir = TempDir::new("fifo-stream");
    let p = dir.path("fifo");
    let c = std::ffi::CString::new(bytes(&p)).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = open(&mut h, &p, "r");
    let id = stream(&mut h, StreamSource::Handle { handle: f });
    let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    w.write_all(b"through the fifo").unwrap();
    assert_eq!(expect_data(&mut h, id, CH_BODY, 16), b"through the fifo");
    drop(w);
    assert_eq!(until_reply(&mut h, id), (vec![], Ok(Reply::Unit)));
    h.call(Op::Close { handle: f }).unwrap();

    let err = h
        .call(Op::Stream(StreamSource::Handle {
            handle: HandleId(u64::MAX - 1),
        }))
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownHandle);
}

#[test]
fn duplicate_stream_id_is_refused() {
    let mut h = start();
    let dir = TempDir::new("dup");
    let p = dir.path("log");
    std::fs::write(&p, b"").unwrap();
    let id = tail(&mut h, &p, TailStart::End);
    h.send(&HostMsg::Call {
        id,
        op: Op::Stream(StreamSource::File {
            path: bytes(&p),
            start: TailStart::End,
        }),
    });
    match h.recv() {
        AgentMsg::Reply { id: i, result } => {
            assert_eq!(i, id);
            assert_eq!(result.unwrap_err().kind, FailureKind::BadRequest);
        }
        other => panic!("{other:?}"),
    }
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id).1, Ok(Reply::Unit));
}

fn run_async(h: &mut Host, script: &str) -> HandleId {
    match h.call(Op::RunAsync(RunSpec {
        program: b"sh".to_vec(),
        args: vec![bb("-c"), bb(script)],
        ..Default::default()
    })) {
        Ok(Reply::Process { handle, .. }) => handle,
        other => panic!("run_async: {other:?}"),
    }
}

#[test]
fn process_stream_replays_and_ends_at_exit() {
    let mut h = start();
    let p = run_async(&mut h, "echo one; sleep 0.2; echo two; echo err >&2");
    let id = stream(
        &mut h,
        StreamSource::Process {
            handle: p,
            channel: CH_STDOUT,
        },
    );
    let (out, result) = until_reply(&mut h, id);
    assert_eq!(out, b"one\ntwo\n");
    assert_eq!(result, Ok(Reply::Unit));
    // After the exit, and after the wait, a stream replays from byte 0.
    let (data, result) = h.call_full(Op::ProcWait {
        handle: p,
        timeout_ms: None,
    });
    assert!(data.0.is_empty());
    assert!(matches!(result, Ok(Reply::Run(_))));
    let id = stream(
        &mut h,
        StreamSource::Process {
            handle: p,
            channel: CH_STDERR,
        },
    );
    assert_eq!(
        until_reply(&mut h, id),
        (b"err\n".to_vec(), Ok(Reply::Unit))
    );
    // Bad channel.
    let err = h
        .call(Op::Stream(StreamSource::Process {
            handle: p,
            channel: 9,
        }))
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn process_stream_follows_live_output_and_cancels() {
    let mut h = start();
    let p = run_async(&mut h, "cat");
    let id = stream(
        &mut h,
        StreamSource::Process {
            handle: p,
            channel: CH_STDOUT,
        },
    );
    for word in ["alpha\n", "beta\n"] {
        h.send(&HostMsg::Call {
            id: RequestId(10_000 + word.len() as u64),
            op: Op::ProcStdin {
                handle: p,
                data: bb(word),
            },
        });
        let mut got = Vec::new();
        let mut counted = false;
        while got.len() < word.len() || !counted {
            match h.recv() {
                AgentMsg::Data { id: i, chunk, .. } if i == id => got.extend_from_slice(&chunk),
                AgentMsg::Reply { result, .. } => {
                    assert_eq!(result, Ok(Reply::Count(word.len() as u64)));
                    counted = true;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, word.as_bytes());
    }
    h.send(&HostMsg::Cancel { id });
    assert_eq!(until_reply(&mut h, id), (vec![], Ok(Reply::Unit)));
    // Closing the process ends a stream too.
    let id = stream(
        &mut h,
        StreamSource::Process {
            handle: p,
            channel: CH_STDOUT,
        },
    );
    assert_eq!(expect_data(&mut h, id, CH_STDOUT, 11), b"alpha\nbeta\n");
    let close = h.start_call(Op::Close { handle: p });
    let mut replies = Vec::new();
    for _ in 0..2 {
        match h.recv() {
            AgentMsg::Reply { id: i, result } => replies.push((i, result)),
            other => panic!("{other:?}"),
        }
    }
    replies.sort_by_key(|(i, _)| *i);
    assert_eq!(
        replies,
        vec![(id, Ok(Reply::Unit)), (close, Ok(Reply::Unit))]
    );
}

#[test]
fn closing_the_connection_cancels_its_streams() {
    let dir = TempDir::new("conn-close");
    let p = dir.path("log");
    std::fs::write(&p, b"").unwrap();
    let mut h = start();
    let _id = tail(&mut h, &p, TailStart::End);
    // `serve` returns only after it cancelled the stream; the test passes
    // when this does not hang.
    assert!(h.close().is_ok());
}
