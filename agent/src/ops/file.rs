//! File handles: open, read, write, seek, close and ioctl.
//!
//! Files are opened with `O_NONBLOCK`, so opening a FIFO or a tty never
//! blocks the connection (a FIFO opened for writing without a reader fails
//! with `ENXIO` instead of waiting for one). The file type is checked once
//! at open:
//!
//! * regular files, directories and block devices cannot block for long:
//!   `O_NONBLOCK` is dropped again and their reads, writes and seeks run
//!   inline on the connection's reader thread;
//! * FIFOs, sockets and character devices (ttys such as `/dev/console`) keep
//!   `O_NONBLOCK`; their reads and writes run on a pooled thread that waits
//!   in `poll` on the descriptor and on the handle's close trigger, so
//!   closing the handle wakes (and fails) an I/O that is waiting.
//!
//! `libc` errno constants appear here only as the numbers sent to the host.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{FileType, Mode, OFlags, SeekFrom};

use provium_protocol::{Failure, HandleId, IoctlSpec, OpenMode, Reply, Whence, CHUNK_LEN};
use serde_bytes::ByteBuf;

use super::rawcall::{address, guarded, splice, Guarded};
use crate::error::{bad_request, errno_failure, io_failure, os_failure, OpResult};
use crate::handles::{self, Resource};
use crate::sys;
use crate::trigger::Trigger;

/// Default mode of a created file (umask applies).
const DEFAULT_PERM: u32 = 0o644;

/// An open file of the handle table.
pub struct FileHandle {
    fd: OwnedFd,
    regular: bool,
    may_block: bool,
    closed: Trigger,
}

impl FileHandle {
    /// The descriptor (valid while the handle is referenced).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether this is a regular file (grows, can be tailed with inotify).
    pub fn is_regular(&self) -> bool {
        self.regular
    }

    /// Whether reads and writes may block indefinitely (FIFO, socket,
    /// character device): those run off the reader thread.
    pub fn may_block(&self) -> bool {
        self.may_block
    }

    /// Fired when the handle is closed.
    pub fn closed(&self) -> &Trigger {
        &self.closed
    }
}

/// `open(2)` flags for a mode, or why the mode is invalid.
pub fn open_flags(mode: &OpenMode) -> Result<OFlags, Failure> {
    let writes = mode.write || mode.append;
    let access = match (mode.read, writes) {
        (true, true) => OFlags::RDWR,
        (true, false) => OFlags::RDONLY,
        (false, true) => OFlags::WRONLY,
        (false, false) => {
            return Err(bad_request(
                "open_file: must specify at least one of `read`, `write`, `append`",
            ))
        }
    };
    if (mode.create || mode.truncate) && !writes {
        return Err(bad_request(
            "open_file: `create` and `truncate` need `write` or `append` access",
        ));
    }
    let mut flags = access | OFlags::CLOEXEC | OFlags::NOCTTY;
    if mode.append {
        flags |= OFlags::APPEND;
    }
    if mode.create {
        flags |= OFlags::CREATE;
        if mode.exclusive {
            flags |= OFlags::EXCL;
        }
    }
    if mode.truncate {
        flags |= OFlags::TRUNC;
    }
    Ok(flags)
}

/// `Op::OpenFile` → [`Reply::Handle`].
pub fn open(path: &[u8], mode: &OpenMode) -> OpResult {
    let flags = open_flags(mode)?;
    // Every bit the host asked for reaches open(2), as before (the kernel
    // keeps the permission bits).
    let perm = Mode::from_bits_retain(mode.perm.unwrap_or(DEFAULT_PERM));
    let fd = sys::open(path, flags | OFlags::NONBLOCK, perm).map_err(|e| io_failure(&e))?;
    let st = rustix::fs::fstat(&fd).map_err(os_failure)?;
    let file_type = FileType::from_raw_mode(st.st_mode);
    let regular = file_type == FileType::RegularFile;
    let may_block = matches!(
        file_type,
        FileType::Fifo | FileType::Socket | FileType::CharacterDevice
    );
    if !may_block {
        // F_SETFL only changes the status flags (O_APPEND stays as asked).
        rustix::fs::fcntl_setfl(&fd, flags).map_err(os_failure)?;
    }
    let handle = FileHandle {
        fd,
        regular,
        may_block,
        closed: Trigger::new(),
    };
    Ok(Reply::Handle(handles::insert(Arc::new(handle))))
}

/// The length of one read: `len` capped at [`CHUNK_LEN`].
pub fn read_len(len: u64) -> usize {
    len.min(CHUNK_LEN as u64) as usize
}

/// One `read(2)` into `buf` on a file that cannot block.
pub fn read_now(file: &FileHandle, buf: &mut [u8]) -> Result<usize, Failure> {
    sys::read(file.fd(), buf).map_err(|e| io_failure(&e))
}

/// Waits until `file` is ready for `events` (or hung up); fails with EBADF
/// when the handle is closed meanwhile.
fn wait_ready(file: &FileHandle, id: HandleId, events: PollFlags) -> Result<(), Failure> {
    let closed = file.closed.fd().map_err(|e| io_failure(&e))?;
    let mut fds = [
        PollFd::from_borrowed_fd(file.fd(), events),
        PollFd::from_borrowed_fd(closed, PollFlags::IN),
    ];
    loop {
        if file.closed.fired() {
            return Err(Failure::os(
                libc::EBADF,
                format!("{id} was closed while waiting for I/O"),
            ));
        }
        if sys::poll(&mut fds, None).map_err(|e| io_failure(&e))? > 0 && sys::has_events(&fds[0]) {
            return Ok(());
        }
    }
}

/// One read of at most `len` bytes, waiting for data on a file that may
/// block → the bytes (empty at end of file).
pub fn read_waiting(file: &FileHandle, id: HandleId, len: u64) -> Result<Vec<u8>, Failure> {
    let mut buf = vec![0u8; read_len(len)];
    if buf.is_empty() {
        return Ok(buf);
    }
    loop {
        if file.may_block {
            wait_ready(file, id, PollFlags::IN)?;
        }
        match sys::read(file.fd(), &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && file.may_block => {}
            Err(e) => return Err(io_failure(&e)),
        }
    }
}

/// `Op::FileRead` on any file, for callers off the reader thread.
pub fn read(id: HandleId, len: u64) -> OpResult {
    let file = handles::get::<FileHandle>(id, "read")?;
    read_waiting(&file, id, len).map(|bytes| Reply::Bytes(ByteBuf::from(bytes)))
}

/// `Op::FileWrite`: one `write(2)` → [`Reply::Count`]. On a file that may
/// block, first waits until it accepts bytes.
pub fn write(id: HandleId, data: &[u8]) -> OpResult {
    let file = handles::get::<FileHandle>(id, "write")?;
    write_to(&file, id, data)
}

/// `Op::FileWrite` on a handle already looked up.
pub fn write_to(file: &FileHandle, id: HandleId, data: &[u8]) -> OpResult {
    loop {
        if file.may_block {
            wait_ready(file, id, PollFlags::OUT)?;
        }
        match sys::write(file.fd(), data) {
            Ok(n) => return Ok(Reply::Count(n as u64)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && file.may_block => {}
            Err(e) => return Err(io_failure(&e)),
        }
    }
}

/// `Op::FileSeek` → [`Reply::Count`] with the new offset; a negative
/// offset for `Set` is clamped to 0.
pub fn seek(id: HandleId, offset: i64, whence: Whence) -> OpResult {
    let file = handles::get::<FileHandle>(id, "seek")?;
    let pos = match whence {
        Whence::Set => SeekFrom::Start(offset.max(0) as u64),
        Whence::Cur => SeekFrom::Current(offset),
        Whence::End => SeekFrom::End(offset),
    };
    rustix::fs::seek(file.fd(), pos)
        .map(Reply::Count)
        .map_err(os_failure)
}

/// Closes a file handle already removed from the table: wakes its streams
/// and waiting I/O; the descriptor closes with the last reference.
pub fn close(file: &FileHandle) -> OpResult {
    file.closed.fire();
    Ok(Reply::Unit)
}

impl Resource for FileHandle {
    const KIND: &'static str = "a file";

    fn close(&self) -> OpResult {
        close(self)
    }
}

/// `Op::Ioctl` → [`Reply::Ioctl`]; a negative return is an OS failure.
/// An empty `data` passes a null pointer (for ioctls without an argument).
pub fn ioctl(spec: IoctlSpec) -> OpResult {
    let file = handles::get::<FileHandle>(spec.handle, "ioctl")?;
    let empty = spec.data.is_empty();
    let mut data = Guarded::new(&spec.data)?;
    let mut bufs = guarded(spec.bufs)?;
    for (buf, &offset) in bufs.iter_mut().zip(&spec.ptr_offsets) {
        splice(data.as_mut_slice(), offset, address(buf.as_mut_slice()));
    }
    let arg = if empty {
        0
    } else {
        address(data.as_mut_slice())
    };
    // A host-requested ioctl (any request, any argument) stays raw by design,
    // like `Op::Syscall` (see `rawcall`).
    // SAFETY: the kernel gets the address of `data` (or null), as the host
    // asked; every buffer it may reach lives until after the call. The
    // raw syscall avoids libc's differing `ioctl` request types.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, file.fd().as_raw_fd(), spec.cmd, arg) };
    if ret < 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(errno_failure(errno));
    }
    Ok(Reply::Ioctl {
        ret: ret as i64,
        data: ByteBuf::from(data.to_vec()),
        bufs: bufs.iter_mut().map(|b| ByteBuf::from(b.to_vec())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_flags() {
        let m = |read, write, append, create, truncate, exclusive| OpenMode {
            read,
            write,
            append,
            create,
            truncate,
            exclusive,
            perm: None,
        };
        let base = OFlags::CLOEXEC | OFlags::NOCTTY;
        assert_eq!(
            open_flags(&m(true, false, false, false, false, false)),
            Ok(base)
        );
        assert_eq!(
            open_flags(&m(false, true, false, true, true, false)),
            Ok(base | OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
        );
        assert_eq!(
            open_flags(&m(true, false, true, true, false, true)),
            Ok(base | OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::EXCL)
        );
        // exclusive without create has no effect
        assert_eq!(
            open_flags(&m(false, true, false, false, false, true)),
            Ok(base | OFlags::WRONLY)
        );
        assert!(open_flags(&m(false, false, false, false, false, false)).is_err());
        assert!(open_flags(&m(true, false, false, true, false, false)).is_err());
        assert!(open_flags(&m(true, false, false, false, true, false)).is_err());
    }
}
