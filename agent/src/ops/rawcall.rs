//! Raw system calls (`Op::Syscall`) and the buffer-address splicing they
//! share with `Op::Ioctl`.
//!
//! Buffers are heap copies owned by the calling thread for the duration of
//! the call; the kernel sees their addresses. The result carries every
//! buffer's contents after the call. A failing system call is not a
//! failure of the operation: its errno is part of [`Reply::Syscall`].
//! Descriptors a call returns stay open in the agent process.
//!
//! This module stays raw `libc` by design (not rustix): it makes whatever
//! system call the host names, with the host's arguments, and maps guarded
//! buffers for it.

use provium_protocol::{Reply, SyscallSpec};
use serde_bytes::ByteBuf;

use provium_protocol::Failure;

use crate::error::{bad_request, internal, OpResult};

/// Number of system call argument slots.
const ARG_SLOTS: usize = 6;

/// System calls that would end or replace the op server itself (its thread,
/// its process, or its program), leaving the host without a reply.
const REFUSED: &[(i64, &str)] = &[
    (libc::SYS_rt_sigreturn, "rt_sigreturn"),
    (libc::SYS_clone, "clone"),
    (libc::SYS_fork, "fork"),
    (libc::SYS_vfork, "vfork"),
    (libc::SYS_execve, "execve"),
    (libc::SYS_exit, "exit"),
    (libc::SYS_exit_group, "exit_group"),
    (libc::SYS_execveat, "execveat"),
    (libc::SYS_clone3, "clone3"),
];

/// The address of a buffer, as the kernel gets it.
pub fn address(buf: &mut [u8]) -> u64 {
    buf.as_mut_ptr() as u64
}

/// A copy of a host buffer that ends right before an inaccessible page: a
/// call that writes past its end (say a `read` whose count exceeds the
/// buffer) gets `EFAULT` instead of corrupting the agent's heap.
pub struct Guarded {
    base: *mut libc::c_void,
    map_len: usize,
    start: usize,
    len: usize,
}

impl Guarded {
    /// Copies `bytes` into a fresh guarded mapping.
    pub fn new(bytes: &[u8]) -> Result<Guarded, Failure> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let data = bytes.len().div_ceil(page) * page;
        let map_len = data + page;
        // SAFETY: a fresh private anonymous mapping, checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(internal(format!(
                "cannot map {map_len} bytes for a syscall buffer: {}",
                std::io::Error::last_os_error()
            )));
        }
        let g = Guarded {
            base,
            map_len,
            start: data - bytes.len(),
            len: bytes.len(),
        };
        // SAFETY: the last page of our own mapping.
        if unsafe { libc::mprotect(base.cast::<u8>().add(data).cast(), page, libc::PROT_NONE) } != 0
        {
            return Err(internal(format!(
                "cannot protect a syscall buffer's guard page: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut g = g;
        g.as_mut_slice().copy_from_slice(bytes);
        Ok(g)
    }

    /// The buffer's bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `start..start + len` lies in the writable part of our
        // mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.base.cast::<u8>().add(self.start), self.len) }
    }

    /// The bytes as a vector (after the call).
    pub fn to_vec(&mut self) -> Vec<u8> {
        self.as_mut_slice().to_vec()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.base, self.map_len) };
    }
}

/// Guarded copies of the host's buffers.
pub fn guarded(bufs: Vec<ByteBuf>) -> Result<Vec<Guarded>, Failure> {
    bufs.iter().map(|b| Guarded::new(b)).collect()
}

/// Writes `addr` (8 bytes, native endian) into `buf` at `offset`; skipped
/// when it does not fit.
pub fn splice(buf: &mut [u8], offset: u64, addr: u64) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(slot) = start.checked_add(8).and_then(|end| buf.get_mut(start..end)) {
        slot.copy_from_slice(&addr.to_ne_bytes());
    }
}

/// `Op::Syscall` → [`Reply::Syscall`].
///
/// `nested` splices apply first (a buffer index out of range is a bad
/// request; an offset that does not fit is skipped, as for ioctl), then
/// `ptrs` put buffer addresses into argument slots.
pub fn syscall(spec: SyscallSpec) -> OpResult {
    if let Some((_, name)) = REFUSED.iter().find(|(nr, _)| *nr == spec.nr) {
        return Err(bad_request(format!(
            "syscall: {name} ({}) would end or replace the agent's op server; \
             run a process for that (vm:run)",
            spec.nr
        )));
    }
    let mut bufs = guarded(spec.bufs)?;
    let addrs: Vec<u64> = bufs.iter_mut().map(|b| address(b.as_mut_slice())).collect();
    for n in &spec.nested {
        let child = addrs.get(n.child as usize).copied();
        let (Some(parent), Some(child)) = (bufs.get_mut(n.parent as usize), child) else {
            return Err(bad_request(format!(
                "syscall: nested entry {{parent={}, child={}}} names a buffer out of range \
                 ({} buffers; indices are 0-based)",
                n.parent,
                n.child,
                addrs.len()
            )));
        };
        splice(parent.as_mut_slice(), n.offset, child);
    }
    if spec.ptrs.len() > addrs.len() {
        return Err(bad_request(format!(
            "syscall: {} pointer slots for {} buffers",
            spec.ptrs.len(),
            addrs.len()
        )));
    }
    let mut args = spec.args;
    for (&slot, &addr) in spec.ptrs.iter().zip(&addrs) {
        let Some(arg) = args.get_mut(slot as usize) else {
            return Err(bad_request(format!(
                "syscall: pointer slot {slot} out of range (0..{ARG_SLOTS})"
            )));
        };
        *arg = addr;
    }
    let [a0, a1, a2, a3, a4, a5] = args.map(|a| a as libc::c_long);
    // SAFETY: a raw system call is what the host asked for; every buffer
    // whose address it was given stays alive until after the call.
    let ret = unsafe { libc::syscall(spec.nr as libc::c_long, a0, a1, a2, a3, a4, a5) } as i64;
    let errno = if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    Ok(Reply::Syscall {
        ret,
        errno,
        bufs: bufs.iter_mut().map(|b| ByteBuf::from(b.to_vec())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_skips_what_does_not_fit() {
        let mut buf = [0u8; 10];
        splice(&mut buf, 2, 0x0102030405060708);
        assert_eq!(&buf[2..10], &0x0102030405060708u64.to_ne_bytes());
        let before = buf;
        splice(&mut buf, 3, 1);
        splice(&mut buf, u64::MAX, 1);
        assert_eq!(buf, before);
    }

    #[test]
    fn guarded_buffers_fault_past_their_end() {
        let mut g = Guarded::new(b"abc").expect("map");
        assert_eq!(g.as_mut_slice(), b"abc");
        // read(2) of 10 bytes from /dev/zero into a 3-byte buffer: EFAULT
        // (or a short read that stops at the guard page), never a write
        // past the end.
        let fd = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0);
        let n = unsafe { libc::read(fd, g.as_mut_slice().as_mut_ptr().cast(), 10) };
        unsafe { libc::close(fd) };
        assert!(n == -1 || n == 3, "read returned {n}");
        if n == -1 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EFAULT)
            );
        }
        let empty = Guarded::new(b"").expect("map");
        drop(empty);
    }

    #[test]
    fn calls_that_end_the_server_are_refused() {
        let spec = SyscallSpec {
            nr: libc::SYS_exit_group,
            ..SyscallSpec::default()
        };
        let err = syscall(spec).expect_err("refused");
        assert!(format!("{err:?}").contains("exit_group"), "{err:?}");
    }
}
