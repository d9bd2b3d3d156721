//! Streams (`Op::Stream`): an empty `Data` frame once the source is open
//! (see [`crate::sender::acknowledge_stream`]), then bytes as `Data` on [`CH_BODY`] until the
//! source ends or the host cancels, then [`Reply::Unit`].
//!
//! Every stream runs on a pooled thread that sleeps in `poll` until the
//! kernel has something for it, never on a timer: an idle stream costs no
//! CPU, an append reaches the host as soon as the thread is scheduled, and
//! a cancel (the stream's [`Trigger`], fired by the connection's reader on
//! `HostMsg::Cancel` or when the connection ends) wakes it at once to
//! release its descriptors.
//!
//! * **Regular files** are followed with inotify. The watch is set on
//!   `/proc/self/fd/N`, i.e. on the very inode the stream has open (no race
//!   with a rename between open and watch), for `IN_MODIFY` only: appends
//!   and truncations (`truncate(2)`, `O_TRUNC`) both raise it. Like
//!   `tail -f` (not `-F`) a stream follows that inode: a rename or an
//!   unlink does not end it (the file can still grow through descriptors
//!   other processes hold), so no `IN_ATTRIB`, `IN_DELETE_SELF` or
//!   `IN_MOVE_SELF` is needed. A tail by path ends when the file shrinks
//!   below the read position (also when it starts past the end), or when
//!   the watch disappears (`IN_IGNORED`: the file system went away).
//! * **Other files** (FIFOs, ttys, sockets) are opened non-blocking and
//!   followed with `poll(POLLIN)`; end of file ends the stream.
//! * **Handles** are followed from the handle's own cursor (the handle's
//!   descriptor is read, so the file's offset moves) and end when the
//!   handle is closed (its close trigger is in the poll set), on cancel,
//!   or at end of file of a non-regular file.
//! * **Processes**: see [`super::process::stream`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use inotify::{EventMask, Inotify, WatchMask};
use provium_protocol::{Failure, Reply, RequestId, StreamSource, TailStart, CHUNK_LEN, CH_BODY};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{FileType, Mode, OFlags, SeekFrom};

use super::process;
use crate::error::{internal, io_failure, os_failure, OpResult};
use crate::handles;
use crate::sender::Sender;
use crate::sys;
use crate::trigger::Trigger;

/// First size of a stream's read buffer; it grows (up to [`CHUNK_LEN`])
/// while reads fill it, so a quiet log costs little memory and a large
/// backlog still moves in full chunks.
const FIRST_BUFFER: usize = 16 * 1024;

/// Room for a burst of inotify events (each at least 16 bytes).
const EVENT_BUFFER: usize = 1024;

/// Descriptors to close only after the reply was sent: releasing an
/// inotify instance waits for an RCU grace period in the kernel (~10 ms
/// measured), which the host should not wait for.
pub type Parked = Vec<OwnedFd>;

/// Runs a stream to its end; `cancel` ends it early.
pub fn stream(
    sender: &Sender,
    req: RequestId,
    source: StreamSource,
    cancel: &Trigger,
    parked: &mut Parked,
) -> OpResult {
    match source {
        StreamSource::File { path, start } => tail_path(sender, req, &path, start, cancel, parked),
        StreamSource::Handle { handle } => {
            let file = handles::get::<super::file::FileHandle>(handle, "stream")?;
            crate::sender::acknowledge_stream(sender, req)?;
            let mut f = Follower::new(sender, req, file.fd(), cancel, Some(file.closed()));
            if file.is_regular() {
                f.follow_regular(None, parked)
            } else {
                f.follow_pollable()
            }
        }
        StreamSource::Process { handle, channel } => {
            process::stream(sender, req, handle, channel, cancel)
        }
    }
}

/// Tails a file by path from `start`.
fn tail_path(
    sender: &Sender,
    req: RequestId,
    path: &[u8],
    start: TailStart,
    cancel: &Trigger,
    parked: &mut Parked,
) -> OpResult {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd: OwnedFd = sys::open(path, flags, Mode::empty()).map_err(|e| io_failure(&e))?;
    let st = rustix::fs::fstat(&fd).map_err(os_failure)?;
    crate::sender::acknowledge_stream(sender, req)?;
    let mut f = Follower::new(sender, req, fd.as_fd(), cancel, None);
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        // Not seekable: `start` has no meaning; follow what comes next.
        return f.follow_pollable();
    }
    let size = st.st_size.max(0) as u64;
    let pos = match start {
        TailStart::End => size,
        TailStart::Offset(n) => n,
        TailStart::FromEnd(n) => size.saturating_sub(n),
    };
    if pos > size {
        // Already "truncated below the position".
        return Ok(Reply::Unit);
    }
    // lseek takes a signed offset.
    i64::try_from(pos).map_err(|_| internal("offset out of range"))?;
    rustix::fs::seek(&fd, SeekFrom::Start(pos)).map_err(os_failure)?;
    f.follow_regular(Some(pos), parked)
}

/// The state of one stream's thread.
struct Follower<'a> {
    sender: &'a Sender,
    req: RequestId,
    fd: BorrowedFd<'a>,
    cancel: &'a Trigger,
    /// A handle's close trigger.
    closed: Option<&'a Trigger>,
    buf: Vec<u8>,
}

impl<'a> Follower<'a> {
    fn new(
        sender: &'a Sender,
        req: RequestId,
        fd: BorrowedFd<'a>,
        cancel: &'a Trigger,
        closed: Option<&'a Trigger>,
    ) -> Self {
        Follower {
            sender,
            req,
            fd,
            cancel,
            closed,
            buf: Vec::new(),
        }
    }

    fn stopped(&self) -> bool {
        self.cancel.fired() || self.closed.is_some_and(|c| c.fired())
    }

    /// The poll set: the source, the cancel trigger, the close trigger
    /// (without one, the cancel trigger stands in: polling a descriptor
    /// twice is allowed, and its events are only ever tested in slot 0).
    fn pollfds<'f>(&self, source: BorrowedFd<'f>) -> Result<[PollFd<'f>; 3], Failure>
    where
        'a: 'f,
    {
        let cancel = self.cancel.fd().map_err(|e| io_failure(&e))?;
        let closed = match self.closed {
            Some(c) => c.fd().map_err(|e| io_failure(&e))?,
            None => cancel,
        };
        Ok([
            PollFd::from_borrowed_fd(source, PollFlags::IN),
            PollFd::from_borrowed_fd(cancel, PollFlags::IN),
            PollFd::from_borrowed_fd(closed, PollFlags::IN),
        ])
    }

    /// One read into the (growing) buffer; `Ok(None)` when it would block.
    fn read_some(&mut self) -> Result<Option<usize>, Failure> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; FIRST_BUFFER];
        }
        match sys::read(self.fd, &mut self.buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(io_failure(&e)),
        }
    }

    /// Sends `buf[..n]`, then grows the buffer if the read filled it.
    fn send(&mut self, n: usize) -> Result<(), Failure> {
        self.sender
            .data(self.req, CH_BODY, &self.buf[..n])
            .map_err(|e| internal(format!("connection lost: {e}")))?;
        if n == self.buf.len() && n < CHUNK_LEN {
            self.buf = vec![0u8; (n * 4).min(CHUNK_LEN)];
        }
        Ok(())
    }

    /// Follows a regular file with inotify. `pos` (tails by path) is the
    /// read position, for noticing a truncation below it. The inotify
    /// instance ends up in `parked`.
    fn follow_regular(&mut self, pos: Option<u64>, parked: &mut Parked) -> OpResult {
        let mut inotify = Inotify::init().map_err(|e| io_failure(&e))?;
        let result = inotify
            .watches()
            .add(
                format!("/proc/self/fd/{}", self.fd.as_raw_fd()),
                WatchMask::MODIFY,
            )
            .map_err(|e| io_failure(&e))
            .and_then(|_| self.follow_inotify(&mut inotify, pos));
        parked.push(OwnedFd::from(inotify));
        result
    }

    /// The loop of [`Self::follow_regular`].
    fn follow_inotify(&mut self, inotify: &mut Inotify, mut pos: Option<u64>) -> OpResult {
        let mut events = [0u8; EVENT_BUFFER];
        // The poll set borrows `inotify`, which reading events needs
        // mutably: it is rebuilt for each sleep, and built once here so a
        // failure (no trigger descriptor) comes before any data.
        self.pollfds(inotify.as_fd())?;
        loop {
            // Everything there is now (the watch is already set, so an
            // append from here on raises an event).
            loop {
                if self.stopped() {
                    return Ok(Reply::Unit);
                }
                match self.read_some()? {
                    Some(0) | None => break,
                    Some(n) => {
                        self.send(n)?;
                        pos = pos.map(|p| p + n as u64);
                    }
                }
            }
            if let Some(p) = pos {
                let size = rustix::fs::fstat(self.fd).map_err(os_failure)?.st_size;
                if (size.max(0) as u64) < p {
                    return Ok(Reply::Unit);
                }
            }
            // Sleep until the kernel reports a change, a cancel or a close.
            let mut fds = self.pollfds(inotify.as_fd())?;
            loop {
                if self.stopped() {
                    return Ok(Reply::Unit);
                }
                if sys::poll(&mut fds, None).map_err(|e| io_failure(&e))? > 0
                    && sys::has_events(&fds[0])
                {
                    break;
                }
            }
            loop {
                match inotify.read_events(&mut events) {
                    Ok(batch) => {
                        let mut any = false;
                        for event in batch {
                            any = true;
                            if event.mask.contains(EventMask::IGNORED) {
                                return Ok(Reply::Unit);
                            }
                        }
                        if !any {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io_failure(&e)),
                }
            }
        }
    }

    /// Follows a FIFO, tty or socket with `poll(POLLIN)` until end of file.
    fn follow_pollable(&mut self) -> OpResult {
        let mut fds = self.pollfds(self.fd)?;
        loop {
            if self.stopped() {
                return Ok(Reply::Unit);
            }
            if sys::poll(&mut fds, None).map_err(|e| io_failure(&e))? == 0
                || !sys::has_events(&fds[0])
            {
                continue;
            }
            match self.read_some()? {
                Some(0) => return Ok(Reply::Unit),
                Some(n) => self.send(n)?,
                None => {}
            }
        }
    }
}
