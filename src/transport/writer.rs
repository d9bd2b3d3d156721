//! The connection's writing side: frames out, from the calling thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::liveness::{Liveness, WAIT_SLICE};
use crate::interrupt;

/// Why a write ended early.
pub(crate) enum WriteEnd {
    Io(io::Error),
    /// Ctrl-C; `clean` when no byte of the frame had been sent.
    Interrupted {
        clean: bool,
    },
    /// The peer took nothing for this long.
    Stalled(Duration),
}

/// The write side: a duplicate of the socket's descriptor, written under a
/// mutex so that frames never interleave. Shutting down does not take the
/// mutex, so it also wakes a writer blocked on a full socket.
pub(crate) struct FdWriter {
    lock: Mutex<()>,
    /// The socket written to (changes when the agent reconnects).
    raw: std::sync::atomic::AtomicI32,
    /// Every descriptor used so far, kept open while the writer lives so
    /// that `raw` never names a number reused by someone else.
    owned: Mutex<Vec<OwnedFd>>,
    shut: std::sync::atomic::AtomicBool,
}

/// A close-on-exec duplicate of `fd`.
fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we are handed; the
    // result is a new descriptor that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

impl FdWriter {
    pub(crate) fn dup(fd: RawFd) -> io::Result<FdWriter> {
        let fd = dup_fd(fd)?;
        Ok(FdWriter {
            lock: Mutex::new(()),
            raw: std::sync::atomic::AtomicI32::new(fd.as_raw_fd()),
            owned: Mutex::new(vec![fd]),
            shut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Writes to a duplicate of `fd` from now on (a new connection).
    pub(crate) fn replace(&self, fd: RawFd) -> io::Result<()> {
        let fd = dup_fd(fd)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.raw.store(fd.as_raw_fd(), Ordering::Release);
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fd);
        Ok(())
    }

    /// The write lock, if nobody holds it.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, ()>> {
        self.lock.try_lock().ok()
    }

    /// Writes a whole frame under the write lock (`held`, or taken here).
    /// Never blocks in the kernel: a full socket is polled in slices, so a
    /// frozen peer ends the write at the stall timeout and Ctrl-C ends it at
    /// once (cleanly if no byte of the frame was sent yet).
    pub(crate) fn write_all(
        &self,
        mut buf: &[u8],
        live: &Liveness,
        held: Option<MutexGuard<'_, ()>>,
    ) -> Result<(), WriteEnd> {
        let _guard = held.unwrap_or_else(|| self.lock.lock().unwrap_or_else(|e| e.into_inner()));
        let fd = self.raw.load(Ordering::Acquire);
        let whole = buf.len();
        let mut blocked_since: Option<std::time::Instant> = None;
        let mut watch: Option<interrupt::Watch> = None;
        while !buf.is_empty() {
            if self.shut.load(Ordering::Acquire) {
                return Err(WriteEnd::Io(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "connection closed",
                )));
            }
            // send(MSG_NOSIGNAL), not write: a peer that is gone (the vsock
            // daemon killed, say) must give EPIPE, not a SIGPIPE that would
            // kill the Lua interpreter hosting the rock.
            // SAFETY: sends from a valid slice on a socket we own.
            let n = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                buf = &buf[n as usize..];
                // Room appearing in a socket that was full means the peer
                // is reading: a sign of life (a long upload gets no replies).
                // A send into free buffer space says nothing about the peer.
                if blocked_since.take().is_some() {
                    live.touch();
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let since = *blocked_since.get_or_insert_with(std::time::Instant::now);
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, WAIT_SLICE.as_millis() as i32) };
                    if watch.get_or_insert_with(interrupt::Watch::arm).fired() {
                        return Err(WriteEnd::Interrupted {
                            clean: buf.len() == whole,
                        });
                    }
                    if let Some(stall) = live.stall_after() {
                        let silence = live.silence(since);
                        if silence >= stall {
                            return Err(WriteEnd::Stalled(silence));
                        }
                    }
                }
                _ => return Err(WriteEnd::Io(err)),
            }
        }
        Ok(())
    }

    /// Shuts the socket down both ways: the reader sees the end, a blocked
    /// writer wakes up with an error, later writes fail.
    pub(crate) fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on a descriptor we own (it stays open until the
        // writer is dropped, so the number cannot be reused meanwhile).
        unsafe { libc::shutdown(self.raw.load(Ordering::Acquire), libc::SHUT_RDWR) };
    }
}
