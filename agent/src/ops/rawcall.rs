//! Raw system calls (`Op::Syscall`) and the buffer-address splicing they
//! share with `Op::Ioctl`.
//!
//! Buffers are heap copies owned by the calling thread for the duration of
//! the call; the kernel sees their addresses. The result carries every
//! buffer's contents after the call. A failing system call is not a
//! failure of the operation: its errno is part of [`Reply::Syscall`].
//! Descriptors a call returns stay open in the agent process.

use provium_protocol::{Reply, SyscallSpec};
use serde_bytes::ByteBuf;

use crate::error::{bad_request, OpResult};

/// Number of system call argument slots.
const ARG_SLOTS: usize = 6;

/// The address of a buffer, as the kernel gets it.
pub fn address(buf: &mut [u8]) -> u64 {
    buf.as_mut_ptr() as u64
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
    let mut bufs: Vec<Vec<u8>> = spec.bufs.into_iter().map(ByteBuf::into_vec).collect();
    let addrs: Vec<u64> = bufs.iter_mut().map(|b| address(b)).collect();
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
        splice(parent, n.offset, child);
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
        bufs: bufs.into_iter().map(ByteBuf::from).collect(),
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
}
