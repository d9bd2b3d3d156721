//! The rock's own tokio runtime, on one side thread for the life of the process.
//!
//! Lua calls never enter the runtime: they hand work to it and block on a
//! channel. The runtime is a current-thread runtime driven by one dedicated,
//! never-exiting thread, which matters beyond tidiness: child processes (QEMU,
//! the vsock daemon) are spawned from that thread with `PR_SET_PDEATHSIG`, and
//! Linux delivers the death signal when the *spawning thread* exits.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Handle of the side runtime, starting it on first use.
pub fn handle() -> &'static Handle {
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("provium-rt".into())
            .spawn(move || {
                let rt = match Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        // Nothing can work without the runtime; say why loudly.
                        tracing::error!("cannot start the I/O runtime: {e}");
                        std::process::abort();
                    }
                };
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .map(|_| ())
            .unwrap_or_else(|e| {
                tracing::error!("cannot start the I/O thread: {e}");
                std::process::abort();
            });
        rx.recv().unwrap_or_else(|_| {
            tracing::error!("the I/O thread died while starting");
            std::process::abort();
        })
    })
}

/// Runs `fut` on the side runtime and blocks the calling (Lua) thread until it
/// finishes.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    handle().spawn(async move {
        let _ = tx.send(fut.await);
    });
    match rx.blocking_recv() {
        Ok(v) => v,
        // The task can only vanish if the runtime thread died, which aborts.
        Err(_) => {
            tracing::error!("the I/O runtime stopped");
            std::process::abort();
        }
    }
}

/// Like [`block_on`], but Ctrl-C (SIGINT) ends the wait: `None` then, and
/// `fut` runs on to its end unobserved (what it yields is dropped, which
/// must clean up after itself: a booted machine is killed on drop).
pub fn block_on_interruptible<F>(fut: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    handle().spawn(async move {
        let _ = tx.send(fut.await);
    });
    let mut watch = None;
    loop {
        match rx.recv_timeout(crate::transport::liveness::WAIT_SLICE) {
            Ok(v) => return Some(v),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if watch
                    .get_or_insert_with(crate::interrupt::Watch::arm)
                    .fired()
                {
                    return None;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                tracing::error!("the I/O runtime stopped");
                std::process::abort();
            }
        }
    }
}

/// Starts `fut` on the side runtime without waiting for it.
pub fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    handle().spawn(fut);
}
