//! Workers: separate agent processes driven through the parent agent.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{bb, bytes, expect_ack, is_root, mode, start, use_agent_binary, Host, TempDir};
use provium_protocol::{
    AgentMsg, ExitStatus, Failure, FailureKind, FileAttrs, HandleId, HostMsg, Op, Reply,
    RunOutcome, RunSpec, StreamSource, SyscallSpec, TailStart, WorkerSpec, CH_BODY, CH_STDOUT,
};

fn spawn(h: &mut Host, spec: WorkerSpec) -> Result<HandleId, Failure> {
    use_agent_binary();
    match h.call(Op::SpawnWorker(spec)) {
        Ok(Reply::Handle(w)) => Ok(w),
        Ok(other) => panic!("spawn_worker: {other:?}"),
        Err(e) => Err(e),
    }
}

fn in_worker(h: &mut Host, worker: HandleId, op: Op) -> Result<Reply, Failure> {
    h.call(Op::InWorker {
        worker,
        op: Box::new(op),
    })
}

fn getpid(h: &mut Host, worker: Option<HandleId>) -> i64 {
    let op = Op::Syscall(SyscallSpec {
        nr: 39,
        ..Default::default()
    });
    let reply = match worker {
        Some(w) => in_worker(h, w, op),
        None => h.call(op),
    };
    match reply {
        Ok(Reply::Syscall { ret, .. }) => ret,
        other => panic!("getpid: {other:?}"),
    }
}

fn sh(script: &str) -> RunSpec {
    RunSpec {
        program: b"sh".to_vec(),
        args: vec![bb("-c"), bb(script)],
        ..Default::default()
    }
}

fn run_in(h: &mut Host, w: HandleId, script: &str) -> RunOutcome {
    match in_worker(h, w, Op::Run(sh(script))) {
        Ok(Reply::Run(out)) => out,
        other => panic!("run in worker: {other:?}"),
    }
}

fn join(h: &mut Host, w: HandleId) -> i32 {
    match h.call(Op::WorkerJoin { worker: w }) {
        Ok(Reply::Exit(code)) => code,
        other => panic!("join: {other:?}"),
    }
}

#[test]
fn spawn_syscall_run_and_join() {
    let mut h = start();
    let t = Instant::now();
    let w = spawn(&mut h, WorkerSpec::default()).unwrap();
    println!("spawn_worker: {:?}", t.elapsed());
    let worker_pid = getpid(&mut h, Some(w));
    assert_ne!(worker_pid, getpid(&mut h, None));
    assert_eq!(worker_pid, getpid(&mut h, Some(w)), "same worker process");
    let out = run_in(&mut h, w, "echo in worker; echo $PPID");
    assert_eq!(out.status, ExitStatus::Exited(0));
    assert_eq!(
        String::from_utf8(out.stdout.into_vec()).unwrap(),
        format!("in worker\n{worker_pid}\n")
    );
    // The worker is an agent of its own: batches work inside it.
    let reply = in_worker(&mut h, w, Op::Batch(vec![Op::Ping, Op::Ping])).unwrap();
    assert_eq!(reply, Reply::Batch(vec![Ok(Reply::Unit), Ok(Reply::Unit)]));
    assert_eq!(join(&mut h, w), 0);
    // Gone after the join.
    let err = in_worker(&mut h, w, Op::Ping).unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownHandle);
    let err = h.call(Op::WorkerJoin { worker: w }).unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownHandle);
}

#[test]
fn files_opened_in_a_worker_live_there() {
    let mut h = start();
    let dir = TempDir::new("worker-file");
    let p = dir.path("f");
    std::fs::write(&p, b"worker reads this").unwrap();
    let w = spawn(&mut h, WorkerSpec::default()).unwrap();
    let Ok(Reply::Handle(f)) = in_worker(
        &mut h,
        w,
        Op::OpenFile {
            path: bytes(&p),
            mode: mode("r"),
        },
    ) else {
        panic!("open in worker")
    };
    assert_eq!(
        in_worker(&mut h, w, Op::FileRead { handle: f, len: 6 }),
        Ok(Reply::Bytes(bb("worker")))
    );
    assert_eq!(
        in_worker(
            &mut h,
            w,
            Op::FileRead {
                handle: f,
                len: 100
            }
        ),
        Ok(Reply::Bytes(bb(" reads this")))
    );
    assert_eq!(
        in_worker(&mut h, w, Op::Close { handle: f }),
        Ok(Reply::Unit)
    );
    assert_eq!(join(&mut h, w), 0);
}

#[test]
fn credentials_apply_to_the_worker() {
    if !is_root() {
        println!(
            "skipped: credentials need root (running as uid {})",
            unsafe { libc::geteuid() }
        );
        return;
    }
    let mut h = start();
    let dir = TempDir::new("worker-creds");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path("secret");
    std::fs::write(&secret, b"root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let w = spawn(
        &mut h,
        WorkerSpec {
            uid: Some(65534),
            gid: Some(65534),
            cwd: Some(bb("/")),
            ..Default::default()
        },
    )
    .unwrap();
    let out = run_in(&mut h, w, "id -u; id -g; id -G; pwd");
    assert_eq!(out.stdout.as_slice(), b"65534\n65534\n65534\n/\n");
    let err = in_worker(
        &mut h,
        w,
        Op::OpenFile {
            path: bytes(&secret),
            mode: mode("r"),
        },
    )
    .unwrap_err();
    assert_eq!((err.kind, err.errno), (FailureKind::Os, libc::EACCES));
    let err = in_worker(
        &mut h,
        w,
        Op::ReadFile {
            path: bytes(&secret),
        },
    )
    .unwrap_err();
    assert_eq!(err.errno, libc::EACCES);
    // The agent itself can.
    let (_, result) = h.call_full(Op::ReadFile {
        path: bytes(&secret),
    });
    assert_eq!(result, Ok(Reply::Bytes(bb("root only"))));
    assert_eq!(join(&mut h, w), 0);

    // Supplementary groups as given.
    let w = spawn(
        &mut h,
        WorkerSpec {
            uid: Some(65534),
            gid: Some(65534),
            groups: Some(vec![65534, 4242]),
            ..Default::default()
        },
    )
    .unwrap();
    let out = run_in(&mut h, w, "id -G");
    assert_eq!(out.stdout.as_slice(), b"65534 4242\n");
    assert_eq!(join(&mut h, w), 0);
}

#[test]
fn setup_failures_report_the_step_and_errno() {
    let mut h = start();
    let err = spawn(
        &mut h,
        WorkerSpec {
            cwd: Some(bb("/no/such/dir")),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!((err.kind, err.errno), (FailureKind::Os, libc::ENOENT));
    assert!(err.message.contains("chdir"), "{}", err.message);

    let err = spawn(
        &mut h,
        WorkerSpec {
            unshare: vec!["time-travel".into()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);

    if is_root() {
        // Root may change to any uid; a worker that is not root may not
        // change back (its own workers fail with EPERM).
        let w = spawn(
            &mut h,
            WorkerSpec {
                uid: Some(65534),
                gid: Some(65534),
                ..Default::default()
            },
        )
        .unwrap();
        let reply = in_worker(
            &mut h,
            w,
            Op::SpawnWorker(WorkerSpec {
                uid: Some(0),
                ..Default::default()
            }),
        );
        let err = reply.unwrap_err();
        assert_eq!(err.errno, libc::EPERM, "{err:?}");
        assert!(err.message.contains("set"), "{}", err.message);
        assert_eq!(join(&mut h, w), 0);
    }
}

#[test]
fn signal_then_join_reports_the_signal() {
    let mut h = start();
    let w = spawn(&mut h, WorkerSpec::default()).unwrap();
    assert_eq!(
        h.call(Op::WorkerSignal {
            worker: w,
            signal: libc::SIGTERM,
        }),
        Ok(Reply::Unit)
    );
    assert_eq!(join(&mut h, w), 128 + libc::SIGTERM);
}

#[test]
fn a_call_in_flight_fails_when_the_worker_dies() {
    let mut h = start();
    let w = spawn(&mut h, WorkerSpec::default()).unwrap();
    let id = h.start_call(Op::InWorker {
        worker: w,
        op: Box::new(Op::Run(sh("sleep 30"))),
    });
    std::thread::sleep(Duration::from_millis(100));
    let sig = h.start_call(Op::WorkerSignal {
        worker: w,
        signal: libc::SIGKILL,
    });
    let mut replies = Vec::new();
    for _ in 0..2 {
        match h.recv() {
            AgentMsg::Reply { id: i, result } => replies.push((i, result)),
            other => panic!("{other:?}"),
        }
    }
    replies.sort_by_key(|(i, _)| *i);
    assert_eq!(replies[0].0, id);
    let err = replies[0].1.clone().unwrap_err();
    assert_eq!(err.errno, libc::ESRCH, "{err:?}");
    assert_eq!(replies[1], (sig, Ok(Reply::Unit)));
    assert_eq!(join(&mut h, w), 128 + libc::SIGKILL);
}

#[test]
fn streams_and_large_output_are_relayed() {
    let mut h = start();
    let dir = TempDir::new("worker-stream");
    let p = dir.path("log");
    std::fs::write(&p, b"first\n").unwrap();
    let w = spawn(&mut h, WorkerSpec::default()).unwrap();

    let id = h.start_call(Op::InWorker {
        worker: w,
        op: Box::new(Op::Stream(StreamSource::File {
            path: bytes(&p),
            start: TailStart::Offset(0),
        })),
    });
    expect_ack(&mut h, id);
    let mut got = Vec::new();
    let expect = |h: &mut Host, want: &[u8], got: &mut Vec<u8>| {
        while got.len() < want.len() {
            match h.recv() {
                AgentMsg::Data {
                    id: i,
                    channel,
                    chunk,
                } => {
                    assert_eq!((i, channel), (id, CH_BODY));
                    got.extend_from_slice(&chunk);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, want);
        got.clear();
    };
    expect(&mut h, b"first\n", &mut got);
    let t = Instant::now();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"second\n")
        .unwrap();
    expect(&mut h, b"second\n", &mut got);
    println!("tail through a worker: append→host {:?}", t.elapsed());
    h.send(&HostMsg::Cancel { id });
    match h.recv() {
        AgentMsg::Reply { id: i, result } => {
            assert_eq!(i, id);
            assert_eq!(result, Ok(Reply::Unit));
        }
        other => panic!("{other:?}"),
    }

    // Output larger than a chunk comes as relayed Data.
    let (data, result) = h.call_full(Op::InWorker {
        worker: w,
        op: Box::new(Op::Run(sh("head -c 700000 /dev/zero"))),
    });
    let Ok(Reply::Run(out)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(data.bytes(CH_STDOUT).len() + out.stdout.len(), 700_000);

    // Uploads through a worker: write_file with more, stdin_more.
    let q = dir.path("uploaded");
    let id = h.start_call(Op::InWorker {
        worker: w,
        op: Box::new(Op::WriteFile {
            path: bytes(&q),
            attrs: FileAttrs::default(),
            data: bb("part1 "),
            more: true,
        }),
    });
    h.send(&HostMsg::Data {
        id,
        chunk: bb("part2"),
        last: true,
    });
    assert_eq!(h.finish_call(id).1, Ok(Reply::Unit));
    assert_eq!(std::fs::read(&q).unwrap(), b"part1 part2");

    let t = Instant::now();
    let close = h.call(Op::Close { handle: w });
    assert_eq!(close, Ok(Reply::Unit));
    println!("close (SIGTERM + join) of a worker: {:?}", t.elapsed());
}

#[test]
fn namespaces() {
    if !is_root() {
        println!("skipped: namespaces need root");
        return;
    }
    let mut h = start();
    let w = match spawn(
        &mut h,
        WorkerSpec {
            unshare: ["mount", "net", "pid", "ipc", "uts"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    ) {
        Ok(w) => w,
        Err(e) if e.errno == libc::EPERM || e.errno == libc::EINVAL => {
            println!("skipped: namespaces unavailable here: {e}");
            return;
        }
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(getpid(&mut h, Some(w)), 1, "PID 1 of its namespace");
    let ours = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = run_in(&mut h, w, "hostname provium-ns-test && hostname");
    assert_eq!(out.stdout.as_slice(), b"provium-ns-test\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        ours
    );
    // /proc/net shows the reader's network namespace (sysfs would show the
    // mounter's).
    let out = run_in(
        &mut h,
        w,
        "sed -n '3,$p' /proc/net/dev | cut -d: -f1 | tr -d ' '",
    );
    assert_eq!(out.stdout.as_slice(), b"lo\n");
    // SIGTERM works although PID 1 of a namespace ignores unhandled ones.
    h.call(Op::WorkerSignal {
        worker: w,
        signal: libc::SIGTERM,
    })
    .unwrap();
    assert_eq!(join(&mut h, w), 128 + libc::SIGTERM);
}

#[test]
fn joining_a_stopped_worker_does_not_stall_the_connection() {
    let mut h = start();
    let w = spawn(&mut h, WorkerSpec::default()).unwrap();
    let pid = getpid(&mut h, Some(w)) as i32;
    h.call(Op::WorkerSignal {
        worker: w,
        signal: libc::SIGSTOP,
    })
    .unwrap();
    let join = h.start_call(Op::WorkerJoin { worker: w });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    // SAFETY: plain system call on the worker we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    match h.recv() {
        AgentMsg::Reply { id, result } => {
            assert_eq!(id, join);
            assert_eq!(result, Ok(Reply::Exit(0)));
        }
        other => panic!("{other:?}"),
    }
}
