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

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use provium_protocol::{Failure, HandleId, IoctlSpec, OpenMode, Reply, Whence, CHUNK_LEN};
use serde_bytes::ByteBuf;

use super::rawcall::{address, guarded, splice, Guarded};
use crate::error::{bad_request, errno_failure, io_failure, OpResult};
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
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
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
pub fn open_flags(mode: &OpenMode) -> Result<libc::c_int, Failure> {
    let writes = mode.write || mode.append;
    let access = match (mode.read, writes) {
        (true, true) => libc::O_RDWR,
        (true, false) => libc::O_RDONLY,
        (false, true) => libc::O_WRONLY,
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
    let mut flags = access | libc::O_CLOEXEC | libc::O_NOCTTY;
    if mode.append {
        flags |= libc::O_APPEND;
    }
    if mode.create {
        flags |= libc::O_CREAT;
        if mode.exclusive {
            flags |= libc::O_EXCL;
        }
    }
    if mode.truncate {
        flags |= libc::O_TRUNC;
    }
    Ok(flags)
}

/// `Op::OpenFile` → [`Reply::Handle`].
pub fn open(path: &[u8], mode: &OpenMode) -> OpResult {
    let flags = open_flags(mode)?;
    let perm = mode.perm.unwrap_or(DEFAULT_PERM);
    let fd = sys::open(path, flags | libc::O_NONBLOCK, perm).map_err(|e| io_failure(&e))?;
    let st = sys::fstat(fd.as_raw_fd()).map_err(|e| io_failure(&e))?;
    let fmt = st.st_mode & libc::S_IFMT;
    let regular = fmt == libc::S_IFREG;
    let may_block = matches!(fmt, libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR);
    if !may_block {
        // F_SETFL only changes the status flags (O_APPEND stays as asked).
        sys::set_status_flags(fd.as_raw_fd(), flags).map_err(|e| io_failure(&e))?;
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
fn wait_ready(file: &FileHandle, id: HandleId, events: libc::c_short) -> Result<(), Failure> {
    let closed = file.closed.fd().map_err(|e| io_failure(&e))?;
    let mut fds = [
        sys::pollfd(file.fd(), events),
        sys::pollfd(closed, libc::POLLIN),
    ];
    loop {
        if file.closed.fired() {
            return Err(Failure::os(
                libc::EBADF,
                format!("{id} was closed while waiting for I/O"),
            ));
        }
        if sys::poll(&mut fds, None).map_err(|e| io_failure(&e))? > 0 && fds[0].revents != 0 {
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
            wait_ready(file, id, libc::POLLIN)?;
        }
        match sys::read(file.fd(), &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && file.may_block => {}
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
            wait_ready(file, id, libc::POLLOUT)?;
        }
        match sys::write(file.fd(), data) {
            Ok(n) => return Ok(Reply::Count(n as u64)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && file.may_block => {}
            Err(e) => return Err(io_failure(&e)),
        }
    }
}

/// `Op::FileSeek` → [`Reply::Count`] with the new offset; a negative
/// offset for `Set` is clamped to 0.
pub fn seek(id: HandleId, offset: i64, whence: Whence) -> OpResult {
    let file = handles::get::<FileHandle>(id, "seek")?;
    let (offset, whence) = match whence {
        Whence::Set => (offset.max(0), libc::SEEK_SET),
        Whence::Cur => (offset, libc::SEEK_CUR),
        Whence::End => (offset, libc::SEEK_END),
    };
    sys::lseek(file.fd(), offset, whence)
        .map(Reply::Count)
        .map_err(|e| io_failure(&e))
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
    // SAFETY: the kernel gets the address of `data` (or null), as the host
    // asked; every buffer it may reach lives until after the call. The
    // raw syscall avoids libc's differing `ioctl` request types.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, file.fd(), spec.cmd, arg) };
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
        let base = libc::O_CLOEXEC | libc::O_NOCTTY;
        assert_eq!(
            open_flags(&m(true, false, false, false, false, false)),
            Ok(base)
        );
        assert_eq!(
            open_flags(&m(false, true, false, true, true, false)),
            Ok(base | libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        );
        assert_eq!(
            open_flags(&m(true, false, true, true, false, true)),
            Ok(base | libc::O_RDWR | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL)
        );
        // exclusive without create has no effect
        assert_eq!(
            open_flags(&m(false, true, false, false, false, true)),
            Ok(base | libc::O_WRONLY)
        );
        assert!(open_flags(&m(false, false, false, false, false, false)).is_err());
        assert!(open_flags(&m(true, false, false, true, false, false)).is_err());
        assert!(open_flags(&m(true, false, false, false, true, false)).is_err());
    }
}
