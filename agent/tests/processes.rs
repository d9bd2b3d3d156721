//! RunAsync and the process operations.

mod common;

use std::time::{Duration, Instant};

use common::{bb, start, Host};
use provium_protocol::{
    AgentMsg, ExitStatus, FailureKind, HandleId, Op, Reply, RunOutcome, RunSpec, CH_STDERR,
    CH_STDOUT,
};

fn sh(script: &str) -> RunSpec {
    RunSpec {
        program: b"sh".to_vec(),
        args: vec![bb("-c"), bb(script)],
        ..Default::default()
    }
}

fn spawn(h: &mut Host, spec: RunSpec) -> (HandleId, u32) {
    match h.call(Op::RunAsync(spec)) {
        Ok(Reply::Process { handle, pid }) => (handle, pid),
        other => panic!("run_async: {other:?}"),
    }
}

fn wait(h: &mut Host, handle: HandleId, timeout_ms: Option<u64>) -> RunOutcome {
    let (data, result) = h.call_full(Op::ProcWait { handle, timeout_ms });
    match result {
        Ok(Reply::Run(mut out)) => {
            let mut stdout = data.bytes(CH_STDOUT);
            stdout.extend_from_slice(&out.stdout);
            let mut stderr = data.bytes(CH_STDERR);
            stderr.extend_from_slice(&out.stderr);
            out.stdout = stdout.into();
            out.stderr = stderr.into();
            out
        }
        other => panic!("wait: {other:?}"),
    }
}

fn running(h: &mut Host, handle: HandleId) -> bool {
    match h.call(Op::ProcStatus { handle }) {
        Ok(Reply::ProcStatus { running }) => running,
        other => panic!("status: {other:?}"),
    }
}

#[test]
fn run_async_then_wait_with_output() {
    let mut h = start();
    let (p, pid) = spawn(&mut h, sh("echo out; echo err >&2; exit 3"));
    assert!(pid > 1);
    let out = wait(&mut h, p, None);
    assert_eq!(out.status, ExitStatus::Exited(3));
    assert_eq!(out.stdout.as_slice(), b"out\n");
    assert_eq!(out.stderr.as_slice(), b"err\n");
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn large_output_comes_as_data() {
    let mut h = start();
    let (p, _) = spawn(
        &mut h,
        sh("head -c 1000000 /dev/zero; head -c 70000 /dev/zero >&2"),
    );
    let (data, result) = h.call_full(Op::ProcWait {
        handle: p,
        timeout_ms: None,
    });
    let Ok(Reply::Run(out)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(data.bytes(CH_STDOUT).len() + out.stdout.len(), 1_000_000);
    assert_eq!(data.bytes(CH_STDERR).len() + out.stderr.len(), 70_000);
    assert!(data
        .sizes(CH_STDOUT)
        .iter()
        .all(|&n| n <= provium_protocol::CHUNK_LEN));
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn stdin_write_and_close_with_cat() {
    let mut h = start();
    let (p, _) = spawn(
        &mut h,
        RunSpec {
            program: b"cat".to_vec(),
            stdin: bb("first "),
            ..Default::default()
        },
    );
    assert_eq!(
        h.call(Op::ProcStdin {
            handle: p,
            data: bb("second"),
        }),
        Ok(Reply::Count(6))
    );
    assert!(running(&mut h, p));
    assert_eq!(h.call(Op::ProcCloseStdin { handle: p }), Ok(Reply::Unit));
    assert_eq!(h.call(Op::ProcCloseStdin { handle: p }), Ok(Reply::Unit));
    let err = h
        .call(Op::ProcStdin {
            handle: p,
            data: bb("late"),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::EBADF);
    let out = wait(&mut h, p, Some(10_000));
    assert_eq!(out.status, ExitStatus::Exited(0));
    assert_eq!(out.stdout.as_slice(), b"first second");
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn stdin_to_an_exited_process_is_epipe() {
    let mut h = start();
    let (p, _) = spawn(&mut h, sh("exec 0<&-; sleep 0.1"));
    std::thread::sleep(Duration::from_millis(50));
    let err = h
        .call(Op::ProcStdin {
            handle: p,
            data: bb("nobody reads"),
        })
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, libc::EPIPE);
    wait(&mut h, p, None);
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn status_running_then_exited_without_reaping() {
    let mut h = start();
    let (p, pid) = spawn(&mut h, sh("read line"));
    assert!(running(&mut h, p));
    h.call(Op::ProcStdin {
        handle: p,
        data: bb("go\n"),
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&mut h, p) {
        assert!(Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Not reaped: still a zombie of ours.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") Z "), "{stat}");
    assert_eq!(wait(&mut h, p, None).status, ExitStatus::Exited(0));
    assert!(!running(&mut h, p));
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn signal_the_group() {
    let mut h = start();
    // `sh -c` forks `sleep`: signalling the shell alone would leave it
    // holding the pipes; the group ends both.
    let (p, _) = spawn(&mut h, sh("sleep 30; true"));
    let started = std::time::Instant::now();
    assert_eq!(
        h.call(Op::ProcSignal {
            handle: p,
            signal: libc::SIGTERM,
            group: true,
        }),
        Ok(Reply::Unit)
    );
    assert_eq!(
        wait(&mut h, p, Some(20_000)).status,
        ExitStatus::Signalled(libc::SIGTERM)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the sleep was not signalled"
    );
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn signal_the_process() {
    let mut h = start();
    // exec: a `sleep` left behind would hold the pipes, and a wait (like
    // `Run`) waits for their end of file.
    let (p, _) = spawn(&mut h, sh("exec sleep 30"));
    assert_eq!(
        h.call(Op::ProcSignal {
            handle: p,
            signal: libc::SIGTERM,
            group: false,
        }),
        Ok(Reply::Unit)
    );
    assert_eq!(
        wait(&mut h, p, Some(10_000)).status,
        ExitStatus::Signalled(libc::SIGTERM)
    );
    // A reaped process is gone: signalling it is no error.
    assert_eq!(
        h.call(Op::ProcSignal {
            handle: p,
            signal: libc::SIGTERM,
            group: false,
        }),
        Ok(Reply::Unit)
    );
    let err = h
        .call(Op::ProcSignal {
            handle: p,
            signal: 1000,
            group: false,
        })
        .err();
    assert!(err.is_none(), "reaped: not even sent");
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn wait_timeout_kills_the_group() {
    let mut h = start();
    let (p, _) = spawn(&mut h, sh("sleep 30 & echo $!; wait"));
    let t = Instant::now();
    let out = wait(&mut h, p, Some(300));
    let took = t.elapsed();
    assert_eq!(out.status, ExitStatus::TimedOut);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let child: i32 = String::from_utf8(out.stdout.into_vec())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background sleep was killed with its group (it may linger as a
    // zombie until its new parent reaps it).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::read_to_string(format!("/proc/{child}/stat")) {
            Err(_) => break,
            Ok(stat) if stat.contains(") Z ") => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "group member survived");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn second_wait_is_ebadf() {
    let mut h = start();
    let (p, _) = spawn(&mut h, sh("true"));
    wait(&mut h, p, None);
    let err = h
        .call(Op::ProcWait {
            handle: p,
            timeout_ms: None,
        })
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, libc::EBADF);
    assert!(err.message.contains("already waited"), "{}", err.message);
    assert!(err.message.contains("one-shot"), "{}", err.message);
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn wait_does_not_block_the_connection() {
    let mut h = start();
    let (p, _) = spawn(&mut h, sh("read x; echo got $x"));
    let wait_id = h.start_call(Op::ProcWait {
        handle: p,
        timeout_ms: None,
    });
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    let stdin_id = h.start_call(Op::ProcStdin {
        handle: p,
        data: bb("it\n"),
    });
    // The process may finish (and the wait answer) before the stdin reply
    // arrives: take both replies in whatever order they come.
    let (mut stdin_reply, mut wait_reply) = (None, None);
    while stdin_reply.is_none() || wait_reply.is_none() {
        match h.recv() {
            AgentMsg::Reply { id, result } if id == stdin_id => stdin_reply = Some(result),
            AgentMsg::Reply { id, result } if id == wait_id => wait_reply = Some(result),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stdin_reply, Some(Ok(Reply::Count(3))));
    let Some(Ok(Reply::Run(out))) = wait_reply else {
        panic!("{wait_reply:?}")
    };
    assert_eq!(out.stdout.as_slice(), b"got it\n");
    h.call(Op::Close { handle: p }).unwrap();
}

#[test]
fn close_terminates_an_unwaited_process() {
    let mut h = start();
    let (p, pid) = spawn(&mut h, sh("sleep 30; true"));
    let t = Instant::now();
    assert_eq!(h.call(Op::Close { handle: p }), Ok(Reply::Unit));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err(), "reaped");
    let err = h.call(Op::ProcStatus { handle: p }).unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownHandle);

    // One that ignores SIGTERM gets SIGKILL after the grace period.
    let (p, pid) = spawn(&mut h, sh("trap '' TERM; sleep 30; true"));
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(h.call(Op::Close { handle: p }), Ok(Reply::Unit));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err(), "reaped");
}

#[test]
fn run_async_refuses_what_it_cannot_honour() {
    let mut h = start();
    for spec in [
        RunSpec {
            program: b"true".to_vec(),
            timeout_ms: Some(5),
            ..Default::default()
        },
        RunSpec {
            program: b"true".to_vec(),
            stdin_more: true,
            ..Default::default()
        },
    ] {
        let err = h.call(Op::RunAsync(spec)).unwrap_err();
        assert_eq!(err.kind, FailureKind::BadRequest);
    }
    let err = h
        .call(Op::RunAsync(RunSpec {
            program: b"/no/such/program".to_vec(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}
