//! A cancelled stream releases its thread and descriptors at once, and an
//! idle stream costs no CPU. (Its own test binary: it counts the process's
//! threads and descriptors.)

mod common;

use std::time::{Duration, Instant};

use common::{bytes, expect_ack, start, Host, TempDir};
use provium_protocol::{AgentMsg, HostMsg, Op, Reply, RequestId, StreamSource, TailStart};

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cancel(h: &mut Host, id: RequestId) -> Duration {
    let t = Instant::now();
    h.send(&HostMsg::Cancel { id });
    match h.recv() {
        AgentMsg::Reply { id: i, result } => {
            assert_eq!(i, id);
            assert_eq!(result, Ok(Reply::Unit));
        }
        other => panic!("{other:?}"),
    }
    t.elapsed()
}

/// Waits (briefly) until the counts are back to `want`.
fn settle(want: (usize, usize)) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = (threads(), fds());
        if now == want || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn cancel_frees_the_stream_and_idle_streams_cost_nothing() {
    let mut h = start();
    let dir = TempDir::new("cancel");
    let p = dir.path("log");
    std::fs::write(&p, b"x").unwrap();
    let tail = |h: &mut Host| {
        let id = h.start_call(Op::Stream(StreamSource::File {
            path: bytes(&p),
            start: TailStart::End,
        }));
        expect_ack(h, id);
        id
    };
    // Warm the thread pool up, so that later streams reuse a thread.
    let id = tail(&mut h);
    cancel(&mut h, id);
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    std::thread::sleep(Duration::from_millis(50));
    let before = (threads(), fds());

    let mut latencies = Vec::new();
    for _ in 0..5 {
        let id = tail(&mut h);
        std::thread::sleep(Duration::from_millis(100));
        // Idle: blocked in poll, not spinning.
        let cpu = cpu_time();
        std::thread::sleep(Duration::from_millis(300));
        let spent = cpu_time() - cpu;
        assert!(
            spent < Duration::from_millis(30),
            "idle stream used {spent:?}"
        );
        latencies.push(cancel(&mut h, id));
        assert_eq!(settle(before), before, "(threads, fds) after cancel");
    }
    latencies.sort();
    println!(
        "cancel → reply: median {:?}, max {:?}; (threads, fds) back to {before:?}",
        latencies[2], latencies[4]
    );
    assert!(latencies[4] < Duration::from_millis(200));
}
