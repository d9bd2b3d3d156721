//! The run operation through `conn::serve`.

mod common;

use std::time::{Duration, Instant};

use common::{bytes, start, Host, TempDir};
use provium_protocol::{
    ExitStatus, FailureKind, HostMsg, Op, Reply, RunOutcome, RunSpec, CHUNK_LEN, CH_STDERR,
    CH_STDOUT,
};
use serde_bytes::ByteBuf;

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

fn sh(script: &str) -> RunSpec {
    RunSpec {
        program: b"sh".to_vec(),
        args: vec![b("-c"), b(script)],
        ..Default::default()
    }
}

fn run(h: &mut Host, spec: RunSpec) -> RunOutcome {
    match h.call(Op::Run(spec)) {
        Ok(Reply::Run(outcome)) => outcome,
        other => panic!("run: {other:?}"),
    }
}

#[test]
fn shell_output_and_exit_code() {
    let mut h = start();
    let out = run(&mut h, sh("echo out; echo err >&2; exit 3"));
    assert_eq!(out.status, ExitStatus::Exited(3));
    assert_eq!(out.stdout.as_slice(), b"out\n");
    assert_eq!(out.stderr.as_slice(), b"err\n");
}

#[test]
fn direct_exec_with_path_lookup() {
    let mut h = start();
    let out = run(
        &mut h,
        RunSpec {
            program: b"echo".to_vec(),
            args: vec![b("a b"), b("$HOME")],
            ..Default::default()
        },
    );
    assert_eq!(out.status, ExitStatus::Exited(0));
    assert_eq!(out.stdout.as_slice(), b"a b $HOME\n");
}

#[test]
fn missing_program_is_enoent() {
    let mut h = start();
    let err = h
        .call(Op::Run(RunSpec {
            program: b"/no/such/program".to_vec(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, libc::ENOENT);
    assert_eq!(err.message, "No such file or directory");
    let err = h
        .call(Op::Run(RunSpec {
            program: b"no-such-program-anywhere".to_vec(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn not_executable_is_eacces() {
    let mut h = start();
    let dir = TempDir::new("eacces");
    std::fs::write(dir.path("script"), b"#!/bin/sh\n").unwrap();
    let err = h
        .call(Op::Run(RunSpec {
            program: bytes(&dir.path("script")),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.errno, libc::EACCES);
}

#[test]
fn signalled() {
    let mut h = start();
    let out = run(&mut h, sh("kill -9 $$"));
    assert_eq!(out.status, ExitStatus::Signalled(9));
}

#[test]
fn stdin_bytes() {
    let mut h = start();
    let out = run(
        &mut h,
        RunSpec {
            program: b"cat".to_vec(),
            stdin: b("fed through stdin"),
            ..Default::default()
        },
    );
    assert_eq!(out.stdout.as_slice(), b"fed through stdin");
    // Without stdin the process reads end of file at once.
    let out = run(&mut h, sh("cat; echo done"));
    assert_eq!(out.stdout.as_slice(), b"done\n");
}

#[test]
fn stdin_streamed_in_data_frames() {
    let mut h = start();
    let id = h.start_call(Op::Run(RunSpec {
        program: b"cat".to_vec(),
        stdin: b("first "),
        stdin_more: true,
        ..Default::default()
    }));
    std::thread::sleep(Duration::from_millis(50));
    h.send(&HostMsg::Data {
        id,
        chunk: b("second "),
        last: false,
    });
    let big = vec![b'z'; 300_000];
    h.send(&HostMsg::Data {
        id,
        chunk: ByteBuf::from(big.clone()),
        last: true,
    });
    let (data, result) = h.finish_call(id);
    let Ok(Reply::Run(out)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(out.status, ExitStatus::Exited(0));
    let mut all = data.bytes(CH_STDOUT);
    all.extend(out.stdout.into_vec());
    let mut want = b"first second ".to_vec();
    want.extend(big);
    assert!(all == want);
}

#[test]
fn env_overlay_and_clear() {
    let mut h = start();
    let mut spec = sh("echo \"$PROVIUM_T1:$PROVIUM_T2:${HOME:+home}\"");
    spec.env = vec![(b("PROVIUM_T1"), b("one")), (b("PROVIUM_T2"), b("two=2"))];
    let out = run(&mut h, spec);
    let home = if std::env::var_os("HOME").is_some() {
        "home"
    } else {
        ""
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("one:two=2:{home}\n")
    );

    let out = run(
        &mut h,
        RunSpec {
            program: b"/usr/bin/env".to_vec(),
            env_clear: true,
            env: vec![(b("ONLY"), b("this"))],
            ..Default::default()
        },
    );
    assert_eq!(out.stdout.as_slice(), b"ONLY=this\n");
}

#[test]
fn cwd() {
    let mut h = start();
    let dir = TempDir::new("cwd");
    let mut spec = sh("pwd");
    spec.cwd = Some(ByteBuf::from(bytes(&dir.0)));
    let out = run(&mut h, spec);
    assert_eq!(
        out.stdout.as_slice(),
        [bytes(&dir.0), b"\n".to_vec()].concat()
    );
    let mut spec = sh("pwd");
    spec.cwd = Some(ByteBuf::from(bytes(&dir.path("missing"))));
    let err = h.call(Op::Run(spec)).unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn own_process_group() {
    let mut h = start();
    let out = run(
        &mut h,
        sh("ps -o pgid= -p $$ 2>/dev/null || cut -d' ' -f5 /proc/$$/stat; echo $$"),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let nums: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(nums.len(), 2, "{text}");
    assert_eq!(nums[0], nums[1], "the child leads its own group");
}

#[test]
fn timeout_kills_the_group_quickly() {
    let mut h = start();
    let t0 = Instant::now();
    let mut spec = sh("echo started; sleep 30 & sleep 30");
    spec.timeout_ms = Some(200);
    let out = run(&mut h, spec);
    let took = t0.elapsed();
    assert_eq!(out.status, ExitStatus::TimedOut);
    assert_eq!(out.stdout.as_slice(), b"started\n");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn timeout_does_not_wait_for_escaped_pipe_holders() {
    let mut h = start();
    let t0 = Instant::now();
    // setsid leaves the group and keeps stdout open for 30 s.
    let mut spec = sh("setsid sleep 30 & echo hi; sleep 30");
    spec.timeout_ms = Some(200);
    let out = run(&mut h, spec);
    let took = t0.elapsed();
    assert_eq!(out.status, ExitStatus::TimedOut);
    assert_eq!(out.stdout.as_slice(), b"hi\n");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn exited_process_with_pipe_holder_is_bounded_by_the_timeout() {
    let mut h = start();
    let t0 = Instant::now();
    let mut spec = sh("setsid sleep 30 & echo bye; exit 4");
    spec.timeout_ms = Some(300);
    let out = run(&mut h, spec);
    assert_eq!(out.status, ExitStatus::Exited(4));
    assert_eq!(out.stdout.as_slice(), b"bye\n");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn large_output_is_streamed_and_reassembled() {
    let mut h = start();
    let (data, result) = h.call_full(Op::Run(sh(
        "yes 0123456789abcdef | head -c 700001; yes err | head -c 300002 >&2",
    )));
    let Ok(Reply::Run(out)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(out.status, ExitStatus::Exited(0));
    assert!(out.stdout.len() + out.stderr.len() <= CHUNK_LEN);
    for ch in [CH_STDOUT, CH_STDERR] {
        for size in data.sizes(ch) {
            assert!(size > 0 && size <= CHUNK_LEN);
        }
    }
    let mut stdout = data.bytes(CH_STDOUT);
    stdout.extend(out.stdout.into_vec());
    let mut stderr = data.bytes(CH_STDERR);
    stderr.extend(out.stderr.into_vec());
    let want_out: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(700_001)
        .collect();
    let want_err: Vec<u8> = b"err\n".iter().copied().cycle().take(300_002).collect();
    assert_eq!(stdout.len(), want_out.len());
    assert!(stdout == want_out);
    assert!(stderr == want_err);
}

#[test]
fn output_that_fits_comes_inline() {
    let mut h = start();
    let (data, result) = h.call_full(Op::Run(sh(&format!("head -c {} /dev/zero", CHUNK_LEN))));
    assert!(data.0.is_empty());
    let Ok(Reply::Run(out)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(out.stdout.len(), CHUNK_LEN);
}

#[test]
fn parallel_runs() {
    let mut h = start();
    let ids: Vec<_> = (0..8)
        .map(|i| h.start_call(Op::Run(sh(&format!("sleep 0.2; echo {i}")))))
        .collect();
    let t0 = Instant::now();
    let mut seen = 0;
    while seen < ids.len() {
        match h.recv() {
            provium_protocol::AgentMsg::Reply { id, result } => {
                let i = ids.iter().position(|&x| x == id).unwrap();
                let Ok(Reply::Run(out)) = result else {
                    panic!("{result:?}")
                };
                assert_eq!(out.stdout.as_slice(), format!("{i}\n").as_bytes());
                seen += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "runs were serialised"
    );
}

#[test]
fn a_cancel_kills_a_running_command_and_ends_its_call() {
    let mut h = start();
    let t0 = std::time::Instant::now();
    let id = h.start_call(Op::Run(RunSpec {
        program: b"sh".to_vec(),
        args: vec![
            ByteBuf::from(b"-c".to_vec()),
            ByteBuf::from(b"sleep 30; echo late".to_vec()),
        ],
        ..Default::default()
    }));
    std::thread::sleep(std::time::Duration::from_millis(200));
    h.send(&HostMsg::Cancel { id });
    let (_, result) = h.finish_call(id);
    let f = result.expect_err("a cancelled run fails");
    assert_eq!(f.errno, libc::ECANCELED, "{f:?}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    // The connection goes on.
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
}
