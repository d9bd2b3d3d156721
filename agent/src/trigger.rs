//! One-shot wake-ups: a stream's cancel, a handle's close.
//!
//! A [`Trigger`] owns an eventfd that becomes (and stays) readable once
//! fired, so a thread blocked in `poll` on a file, an inotify instance or a
//! pidfd can wait on it too and wake at once. The eventfd is only created
//! when a thread first asks for it (most file handles are never polled).
//! Threads that wait on a condition variable instead register a waker
//! ([`Trigger::on_fire`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::sys;

/// Called once when a trigger fires.
pub type Waker = Box<dyn Fn() + Send + Sync>;

/// A level-triggered, one-shot event.
#[derive(Default)]
pub struct Trigger {
    fired: AtomicBool,
    fd: OnceLock<OwnedFd>,
    wakers: Mutex<Vec<Waker>>,
}

impl Trigger {
    /// A trigger that has not fired.
    pub fn new() -> Trigger {
        Trigger::default()
    }

    fn wakers(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires the trigger (idempotent): its descriptor becomes readable and
    /// every registered waker runs.
    pub fn fire(&self) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        // A descriptor created concurrently sees `fired` itself (see `fd`).
        if let Some(fd) = self.fd.get() {
            sys::eventfd_signal(fd.as_fd());
        }
        let wakers = std::mem::take(&mut *self.wakers());
        for wake in wakers {
            wake();
        }
    }

    /// Whether the trigger has fired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// A descriptor that is readable once the trigger fired (for `poll`);
    /// created on first use.
    pub fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.as_fd());
        }
        let new = sys::eventfd()?;
        let mut ours = false;
        // Another thread may have created one first: then that one is
        // used (ours is closed).
        let fd = self
            .fd
            .get_or_init(|| {
                ours = true;
                new
            })
            .as_fd();
        // Either `fire` saw this descriptor or we see `fired`.
        if ours && self.fired() {
            sys::eventfd_signal(fd);
        }
        Ok(fd)
    }

    /// Runs `wake` when the trigger fires (at once if it already has).
    pub fn on_fire(&self, wake: Waker) {
        {
            let mut wakers = self.wakers();
            if !self.fired() {
                wakers.push(wake);
                return;
            }
        }
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn fires_once_and_stays_readable() {
        let t = Trigger::new();
        let fd = t.fd().unwrap();
        assert!(!t.fired());
        assert!(!sys::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        t.on_fire(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        t.fire();
        t.fire();
        assert!(t.fired());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(sys::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        assert!(sys::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        let c = Arc::clone(&count);
        t.on_fire(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_descriptor_made_after_firing_is_readable() {
        let t = Trigger::new();
        t.fire();
        let fd = t.fd().unwrap();
        assert!(sys::poll_readable(fd, Some(Duration::ZERO)).unwrap());
        assert_eq!(t.fd().unwrap().as_raw_fd(), fd.as_raw_fd());
    }
}
