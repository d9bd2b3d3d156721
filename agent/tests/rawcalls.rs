//! Raw system calls.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::{bb, start, Host};
use provium_protocol::{FailureKind, Nested, Op, Reply, SyscallSpec};
use serde_bytes::ByteBuf;

const SYS_WRITE: i64 = 1;
const SYS_CLOSE: i64 = 3;
const SYS_WRITEV: i64 = 20;
const SYS_GETPID: i64 = 39;
const SYS_UNAME: i64 = 63;

fn syscall(h: &mut Host, spec: SyscallSpec) -> (i64, i32, Vec<ByteBuf>) {
    match h.call(Op::Syscall(spec)) {
        Ok(Reply::Syscall { ret, errno, bufs }) => (ret, errno, bufs),
        other => panic!("syscall: {other:?}"),
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: new descriptors owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn drain(fd: &OwnedFd, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // SAFETY: buf is valid for n bytes.
    let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), n) };
    assert_eq!(got, n as isize);
    buf
}

#[test]
fn getpid_integer_form() {
    let mut h = start();
    let (ret, errno, bufs) = syscall(
        &mut h,
        SyscallSpec {
            nr: SYS_GETPID,
            ..Default::default()
        },
    );
    // The agent runs inside this test process.
    assert_eq!(ret, std::process::id() as i64);
    assert_eq!(errno, 0);
    assert!(bufs.is_empty());
}

#[test]
fn uname_fills_a_buffer() {
    let mut h = start();
    let (ret, errno, bufs) = syscall(
        &mut h,
        SyscallSpec {
            nr: SYS_UNAME,
            bufs: vec![ByteBuf::from(vec![0u8; 6 * 65])],
            ptrs: vec![0],
            ..Default::default()
        },
    );
    assert_eq!((ret, errno), (0, 0));
    assert_eq!(&bufs[0][..6], b"Linux\0");
}

#[test]
fn write_to_a_pipe_and_failures_in_errno() {
    let mut h = start();
    let (r, w) = pipe();
    let (ret, errno, _) = syscall(
        &mut h,
        SyscallSpec {
            nr: SYS_WRITE,
            args: [w.as_raw_fd() as u64, 0, 11, 0, 0, 0],
            bufs: vec![bb("hello pipe!")],
            ptrs: vec![1],
            ..Default::default()
        },
    );
    assert_eq!((ret, errno), (11, 0));
    assert_eq!(drain(&r, 11), b"hello pipe!");

    // A failing call is a result, not a failure.
    let (ret, errno, _) = syscall(
        &mut h,
        SyscallSpec {
            nr: SYS_CLOSE,
            args: [u32::MAX as u64 >> 2, 0, 0, 0, 0, 0],
            ..Default::default()
        },
    );
    assert_eq!((ret, errno), (-1, libc::EBADF));
}

#[test]
fn nested_pointer_for_writev() {
    let mut h = start();
    let (r, w) = pipe();
    let payload = b"through an iovec";
    // bufs[0]: struct iovec { base = &bufs[1] (spliced), len }.
    let mut iov = vec![0u8; 16];
    iov[8..].copy_from_slice(&(payload.len() as u64).to_ne_bytes());
    let (ret, errno, bufs) = syscall(
        &mut h,
        SyscallSpec {
            nr: SYS_WRITEV,
            args: [w.as_raw_fd() as u64, 0, 1, 0, 0, 0],
            bufs: vec![ByteBuf::from(iov), ByteBuf::from(payload.to_vec())],
            ptrs: vec![1],
            nested: vec![Nested {
                parent: 0,
                child: 1,
                offset: 0,
            }],
        },
    );
    assert_eq!((ret, errno), (payload.len() as i64, 0));
    assert_eq!(drain(&r, payload.len()), payload);
    assert_ne!(u64::from_ne_bytes(bufs[0][..8].try_into().unwrap()), 0);
}

#[test]
fn bad_indices_are_bad_requests() {
    let mut h = start();
    for spec in [
        SyscallSpec {
            nr: SYS_GETPID,
            bufs: vec![bb("x")],
            ptrs: vec![6],
            ..Default::default()
        },
        SyscallSpec {
            nr: SYS_GETPID,
            bufs: vec![bb("x")],
            ptrs: vec![0, 1],
            ..Default::default()
        },
        SyscallSpec {
            nr: SYS_GETPID,
            bufs: vec![bb("x")],
            nested: vec![Nested {
                parent: 0,
                child: 1,
                offset: 0,
            }],
            ..Default::default()
        },
    ] {
        let err = h.call(Op::Syscall(spec)).unwrap_err();
        assert_eq!(err.kind, FailureKind::BadRequest, "{err:?}");
    }
    // An offset that does not fit is skipped, like ioctl's.
    let (ret, _, bufs) = syscall(
        &mut h,
        SyscallSpec {
            nr: SYS_GETPID,
            bufs: vec![bb("short"), bb("y")],
            nested: vec![Nested {
                parent: 0,
                child: 1,
                offset: 1,
            }],
            ..Default::default()
        },
    );
    assert!(ret > 0);
    assert_eq!(bufs[0].as_slice(), b"short");
}
