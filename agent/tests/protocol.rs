//! Handshake, framing and multiplexing of `conn::serve`.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bytes, connect, start, TempDir};
use provium_agent::conn::{ConnEnd, ConnError, ServeOptions};
use provium_protocol::{
    decode, encode, read_frame, AgentMsg, FailureKind, FrameError, HostMsg, Op, Reply, RequestId,
    RunSpec, SessionToken, CH_SIZE_HINT, PROTOCOL_VERSION, RAW_ECHO_MAGIC,
};
use serde_bytes::ByteBuf;

#[test]
fn hello_then_ping() {
    let mut h = start();
    let hello = h.hello.clone().unwrap();
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!hello.kernel.is_empty());
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    assert!(matches!(h.close(), Ok(ConnEnd::Closed)));
}

#[test]
fn agent_rejects_a_host_of_another_version() {
    let mut h = connect(ServeOptions::default());
    h.send(&HostMsg::Hello {
        version: PROTOCOL_VERSION + 1,
        token: SessionToken([0; 32]),
    });
    match h.recv() {
        AgentMsg::HelloRejected { version, reason } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert!(reason.contains(&PROTOCOL_VERSION.to_string()), "{reason}");
            assert!(
                reason.contains(&(PROTOCOL_VERSION + 1).to_string()),
                "{reason}"
            );
        }
        other => panic!("expected HelloRejected, got {other:?}"),
    }
    assert!(h.at_eof(), "agent must close after rejecting");
    assert!(matches!(h.join(), Ok(ConnEnd::RejectedHost)));
}

#[test]
fn host_rejecting_the_agent_closes() {
    let mut h = connect(ServeOptions::default());
    h.send(&HostMsg::HelloRejected {
        version: PROTOCOL_VERSION + 7,
        reason: "too old".into(),
    });
    assert!(h.at_eof());
    assert!(matches!(h.join(), Ok(ConnEnd::Rejected)));
}

#[test]
fn a_call_before_the_hello_closes() {
    let mut h = connect(ServeOptions::default());
    h.send(&HostMsg::Call {
        id: RequestId(1),
        op: Op::Ping,
    });
    assert!(h.at_eof());
    assert!(matches!(h.join(), Err(ConnError::Handshake(_))));
}

#[test]
fn oversized_frame_closes_without_panic() {
    let mut h = start();
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    h.send_raw(&u32::MAX.to_le_bytes());
    assert!(h.at_eof());
    match h.join() {
        Err(ConnError::Frame(FrameError::TooLarge { len, .. })) => {
            assert_eq!(len, u32::MAX as usize)
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn malformed_frame_closes_without_panic() {
    let mut h = start();
    let mut frame = 3u32.to_le_bytes().to_vec();
    frame.extend([0xff, 0xff, 0xff]);
    h.send_raw(&frame);
    assert!(h.at_eof());
    assert!(matches!(
        h.join(),
        Err(ConnError::Frame(FrameError::Malformed(_)))
    ));
}

#[test]
fn truncated_frame_closes() {
    let mut h = start();
    h.send_raw(&100u32.to_le_bytes());
    h.send_raw(b"abc");
    h.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(matches!(
        h.join(),
        Err(ConnError::Frame(FrameError::Truncated { .. }))
    ));
}

#[test]
fn bad_requests_are_answered_not_fatal() {
    let mut h = start();
    let err = h
        .call(Op::Stat {
            path: b"/tmp/a\0b".to_vec(),
            follow: true,
        })
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    let err = h.call(Op::Run(RunSpec::default())).unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    let err = h
        .call(Op::Run(RunSpec {
            program: b"true".to_vec(),
            env: vec![(ByteBuf::from(b"A=B".to_vec()), ByteBuf::from(b"x".to_vec()))],
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    // Data and Cancel for unknown ids are ignored.
    h.send(&HostMsg::Data {
        id: RequestId(999),
        chunk: ByteBuf::from(b"x".to_vec()),
        last: true,
    });
    h.send(&HostMsg::Cancel { id: RequestId(998) });
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
}

#[test]
fn calls_in_flight_are_answered_independently() {
    let mut h = start();
    let dir = TempDir::new("inflight");
    std::fs::write(dir.path("f"), b"hi").unwrap();
    let t0 = Instant::now();
    let sleeper = h.start_call(Op::Run(RunSpec {
        program: b"sleep".to_vec(),
        args: vec![ByteBuf::from(b"1".to_vec())],
        ..Default::default()
    }));
    let mut stats = Vec::new();
    for _ in 0..20 {
        stats.push(h.start_call(Op::Stat {
            path: bytes(&dir.path("f")),
            follow: true,
        }));
    }
    let mut seen_stats = 0;
    let mut run_done = false;
    while !run_done || seen_stats < stats.len() {
        match h.recv() {
            AgentMsg::Reply { id, result } if id == sleeper => {
                assert!(seen_stats == stats.len(), "run finished before the stats");
                assert!(matches!(result, Ok(Reply::Run(_))));
                assert!(t0.elapsed() >= Duration::from_millis(900));
                run_done = true;
            }
            AgentMsg::Reply { id, result } => {
                assert!(stats.contains(&id));
                let Ok(Reply::Stat(st)) = result else {
                    panic!("bad stat reply {result:?}")
                };
                assert_eq!(st.size, 2);
                seen_stats += 1;
                if seen_stats == stats.len() {
                    assert!(
                        t0.elapsed() < Duration::from_millis(800),
                        "stats waited for the run"
                    );
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn many_blocking_calls_interleave() {
    interleaved_reads(start());
}

/// The same reads spliced into the stream (as on the serial port): the
/// frames around the spliced bytes stay whole, files odd-sized or not.
#[test]
fn spliced_reads_interleave_too() {
    let mut h = connect(ServeOptions {
        trusted: true,
        splice: true,
        ..Default::default()
    });
    h.send(&HostMsg::Hello {
        version: PROTOCOL_VERSION,
        token: SessionToken([0; SessionToken::LEN]),
    });
    interleaved_reads(h);
}

fn interleaved_reads(mut h: common::Host) {
    let dir = TempDir::new("interleave");
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path("big"), &big).unwrap();
    let mut reads = Vec::new();
    for _ in 0..4 {
        reads.push(h.start_call(Op::ReadFile {
            path: bytes(&dir.path("big")),
        }));
    }
    let mut bodies: std::collections::HashMap<RequestId, Vec<u8>> = Default::default();
    let mut done = 0;
    while done < reads.len() {
        match h.recv() {
            // The size hint of a long body is not part of it.
            AgentMsg::Data { channel, .. } if channel == CH_SIZE_HINT => {}
            AgentMsg::Data { id, chunk, .. } => {
                bodies.entry(id).or_default().extend(chunk.into_vec())
            }
            AgentMsg::Reply { id, result } => {
                let Ok(Reply::Bytes(tail)) = result else {
                    panic!("{result:?}")
                };
                let body = bodies.entry(id).or_default();
                body.extend(tail.into_vec());
                assert!(*body == big);
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn poweroff_replies_then_ends_the_connection() {
    let mut h = start();
    assert_eq!(h.call(Op::Poweroff), Ok(Reply::Unit));
    assert!(h.at_eof());
    assert!(matches!(h.join(), Ok(ConnEnd::Poweroff)));
}

#[test]
fn hello_in_mid_session_restarts_the_session() {
    let mut h = start();
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    h.send(&HostMsg::Hello {
        version: PROTOCOL_VERSION,
        token: SessionToken([0; 32]),
    });
    assert!(matches!(h.recv(), AgentMsg::Hello(_)));
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
}

#[test]
fn rehello_drops_replies_of_the_old_session() {
    let mut h = start();
    let stale = h.start_call(Op::Run(RunSpec {
        program: b"sleep".to_vec(),
        // Long enough that the new hello is served first even on a loaded
        // host (0.3 s failed once while two cargo builds ran beside it).
        args: vec![ByteBuf::from(b"1.5".to_vec())],
        ..Default::default()
    }));
    h.send(&HostMsg::Hello {
        version: PROTOCOL_VERSION,
        token: SessionToken([0; 32]),
    });
    assert!(matches!(h.recv(), AgentMsg::Hello(_)));
    std::thread::sleep(Duration::from_millis(2000));
    // The first frame after the new hello answers the ping, not the old run.
    let id = h.start_call(Op::Ping);
    match h.recv() {
        AgentMsg::Reply { id: got, result } => {
            assert_ne!(got, stale, "a reply of the old session leaked");
            assert_eq!(got, id);
            assert_eq!(result, Ok(Reply::Unit));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn raw_echo_instead_of_hello() {
    let mut h = connect(ServeOptions {
        allow_echo: true,
        trusted: false,
        splice: false,
    });
    h.send_raw(RAW_ECHO_MAGIC);
    let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let mut writer = h.stream.try_clone().unwrap();
    let p2 = payload.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&p2).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    h.reader.read_to_end(&mut back).unwrap();
    w.join().unwrap();
    assert!(back == payload);
    assert!(matches!(h.join(), Ok(ConnEnd::Echo)));
}

#[test]
fn echo_magic_is_a_bad_hello_where_echo_is_not_allowed() {
    let mut h = connect(ServeOptions::default());
    h.send_raw(RAW_ECHO_MAGIC);
    assert!(h.at_eof());
    assert!(h.join().is_err());
}

#[test]
fn serve_stdio_binary() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provium-agent"))
        .arg("--serve-stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let body = read_frame(&mut stdout).unwrap().unwrap();
    assert!(matches!(
        decode::<AgentMsg>(&body).unwrap(),
        AgentMsg::Hello(_)
    ));
    stdin
        .write_all(
            &encode(&HostMsg::Hello {
                version: PROTOCOL_VERSION,
                token: SessionToken([0; 32]),
            })
            .unwrap(),
        )
        .unwrap();
    stdin
        .write_all(
            &encode(&HostMsg::Call {
                id: RequestId(5),
                op: Op::Stat {
                    path: b"/".to_vec(),
                    follow: true,
                },
            })
            .unwrap(),
        )
        .unwrap();
    let body = read_frame(&mut stdout).unwrap().unwrap();
    match decode::<AgentMsg>(&body).unwrap() {
        AgentMsg::Reply {
            id,
            result: Ok(Reply::Stat(st)),
        } => {
            assert_eq!(id, RequestId(5));
            assert_eq!(st.mode & 0o170000, 0o040000);
        }
        other => panic!("unexpected {other:?}"),
    }
    drop(stdin);
    assert!(read_frame(&mut stdout).unwrap().is_none());
    assert!(child.wait().unwrap().success());
}
