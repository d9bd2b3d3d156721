//! Reused threads for blocking work.
//!
//! Measured reason for not spawning a thread per operation: under TCG a
//! thread start costs ~3 ms in the guest (a 10-byte `read_file` took 3.9 ms
//! with a fresh thread against ~0.4 ms for an inline `stat`). Idle workers wait
//! on their own channel; a job goes to an idle worker, or to a new thread
//! when all are busy (operations such as `run` block for as long as the
//! process lives, so the pool must grow rather than queue).

use std::io;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, MutexGuard};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Idle workers kept beyond this many exit instead of waiting.
const MAX_IDLE: usize = 16;

static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

fn idle() -> MutexGuard<'static, Vec<Sender<Job>>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on an idle worker or a new thread.
pub fn execute(f: Job) -> io::Result<()> {
    let mut job = f;
    // A worker may have exited since it was listed: try the next one.
    while let Some(worker) = idle().pop() {
        match worker.send(job) {
            Ok(()) => return Ok(()),
            Err(returned) => job = returned.0,
        }
    }
    let (tx, rx) = channel::<Job>();
    std::thread::Builder::new()
        .name("agent-worker".into())
        .spawn(move || {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                job();
                {
                    let mut idle = idle();
                    if idle.len() >= MAX_IDLE {
                        return;
                    }
                    idle.push(tx.clone());
                }
                next = rx.recv().ok();
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_jobs_and_reuses_threads() {
        let (tx, rx) = mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            execute(Box::new(move || {
                let _ = tx.send((i, std::thread::current().id()));
            }))
            .unwrap();
            // Let the worker go idle so the next job can reuse it.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut seen: Vec<_> = (0..50).map(|_| rx.recv().unwrap()).collect();
        seen.sort_by_key(|(i, _)| *i);
        assert_eq!(seen.len(), 50);
        let threads: std::collections::HashSet<_> = seen.iter().map(|(_, t)| *t).collect();
        assert!(threads.len() < 50, "threads were not reused");
    }

    #[test]
    fn grows_when_workers_block() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        // Two jobs that block until released, then one that must still run.
        for _ in 0..2 {
            let r = release_rx.clone();
            execute(Box::new(move || {
                let _ = r.lock().unwrap().recv();
            }))
            .unwrap();
        }
        execute(Box::new(move || {
            let _ = done_tx.send(());
        }))
        .unwrap();
        done_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
    }
}
