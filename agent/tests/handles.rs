//! File handles: open, read, write, seek, close, ioctl; FIFOs off the
//! reader thread.

mod common;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{bb, bytes, mode, open, start, Host, TempDir};
use provium_protocol::{AgentMsg, FailureKind, HandleId, IoctlSpec, Op, Reply, Whence, CHUNK_LEN};
use serde_bytes::ByteBuf;

/// x86-64 ioctl numbers (libc's constants change type with the C library).
const FIONREAD: u64 = 0x541B;
const TCGETS: u64 = 0x5401;
const FIONBIO: u64 = 0x5421;

fn read(h: &mut Host, handle: HandleId, len: u64) -> Vec<u8> {
    match h.call(Op::FileRead { handle, len }) {
        Ok(Reply::Bytes(b)) => b.into_vec(),
        other => panic!("read: {other:?}"),
    }
}

fn seek(h: &mut Host, handle: HandleId, offset: i64, whence: Whence) -> u64 {
    match h.call(Op::FileSeek {
        handle,
        offset,
        whence,
    }) {
        Ok(Reply::Count(n)) => n,
        other => panic!("seek: {other:?}"),
    }
}

#[test]
fn open_write_seek_read_close() {
    let mut h = start();
    let dir = TempDir::new("rw");
    let p = dir.path("data");
    let f = open(&mut h, &p, "rwct");
    assert_eq!(
        h.call(Op::FileWrite {
            handle: f,
            data: bb("hello world"),
        }),
        Ok(Reply::Count(11))
    );
    assert_eq!(seek(&mut h, f, 0, Whence::Cur), 11);
    assert_eq!(seek(&mut h, f, -100, Whence::Set), 0, "negative set clamps");
    assert_eq!(read(&mut h, f, 5), b"hello");
    assert_eq!(seek(&mut h, f, 1, Whence::Cur), 6);
    assert_eq!(read(&mut h, f, 100), b"world");
    assert_eq!(read(&mut h, f, 100), b"", "empty at end of file");
    assert_eq!(seek(&mut h, f, -5, Whence::End), 6);
    assert_eq!(read(&mut h, f, 0), b"");
    assert_eq!(h.call(Op::Close { handle: f }), Ok(Reply::Unit));
    assert_eq!(std::fs::read(&p).unwrap(), b"hello world");
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o644 & !umask());

    // Reads are capped at one chunk.
    std::fs::write(&p, vec![7u8; CHUNK_LEN + 10]).unwrap();
    let f = open(&mut h, &p, "r");
    assert_eq!(read(&mut h, f, u64::MAX).len(), CHUNK_LEN);
    assert_eq!(read(&mut h, f, u64::MAX).len(), 10);
    h.call(Op::Close { handle: f }).unwrap();
}

fn umask() -> u32 {
    // SAFETY: plain system calls (reads the umask by setting it back).
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

#[test]
fn handles_outlive_their_connection() {
    let dir = TempDir::new("survive");
    let p = dir.path("f");
    std::fs::write(&p, b"persistent").unwrap();
    let mut h1 = start();
    let f = open(&mut h1, &p, "r");
    assert_eq!(read(&mut h1, f, 4), b"pers");
    h1.close().unwrap();
    let mut h2 = start();
    assert_eq!(read(&mut h2, f, 100), b"istent");
    h2.call(Op::Close { handle: f }).unwrap();
}

#[test]
fn append_create_exclusive_and_perm() {
    let mut h = start();
    let dir = TempDir::new("modes");
    let p = dir.path("log");
    std::fs::write(&p, b"one\n").unwrap();
    let f = open(&mut h, &p, "a");
    h.call(Op::FileWrite {
        handle: f,
        data: bb("two\n"),
    })
    .unwrap();
    h.call(Op::Close { handle: f }).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"one\ntwo\n");

    let err = h
        .call(Op::OpenFile {
            path: bytes(&p),
            mode: mode("wcx"),
        })
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, libc::EEXIST);

    let q = dir.path("secret");
    let mut m = mode("wcx");
    m.perm = Some(0o600);
    let Ok(Reply::Handle(f)) = h.call(Op::OpenFile {
        path: bytes(&q),
        mode: m,
    }) else {
        panic!("open secret")
    };
    h.call(Op::Close { handle: f }).unwrap();
    assert_eq!(
        std::fs::metadata(&q).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let err = h
        .call(Op::OpenFile {
            path: bytes(&dir.path("missing")),
            mode: mode("r"),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn bad_modes_are_bad_requests() {
    let mut h = start();
    let dir = TempDir::new("badmode");
    let p = bytes(&dir.path("x"));
    for (spec, needle) in [("", "at least one of"), ("rc", "need"), ("rt", "need")] {
        let err = h
            .call(Op::OpenFile {
                path: p.clone(),
                mode: mode(spec),
            })
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::BadRequest, "{spec}");
        assert!(err.message.contains(needle), "{spec}: {}", err.message);
    }
    assert!(!dir.path("x").exists());
}

#[test]
fn unknown_handles_name_the_op_and_the_id() {
    let mut h = start();
    let bogus = HandleId(u64::MAX - 7);
    let cases: Vec<(Op, &str)> = vec![
        (
            Op::FileRead {
                handle: bogus,
                len: 1,
            },
            "read",
        ),
        (
            Op::FileWrite {
                handle: bogus,
                data: bb("x"),
            },
            "write",
        ),
        (
            Op::FileSeek {
                handle: bogus,
                offset: 0,
                whence: Whence::Cur,
            },
            "seek",
        ),
        (Op::Close { handle: bogus }, "close"),
        (
            Op::Ioctl(IoctlSpec {
                handle: bogus,
                cmd: 0,
                data: ByteBuf::new(),
                bufs: vec![],
                ptr_offsets: vec![],
            }),
            "ioctl",
        ),
        (Op::ProcStatus { handle: bogus }, "status"),
        (
            Op::ProcWait {
                handle: bogus,
                timeout_ms: None,
            },
            "wait",
        ),
        (Op::WorkerJoin { worker: bogus }, "worker_join"),
    ];
    for (op, name) in cases {
        let err = h.call(op).unwrap_err();
        assert_eq!(err.kind, FailureKind::UnknownHandle, "{name}");
        assert_eq!(err.message, format!("{name} on handle#{}", bogus.0));
    }
    // A closed handle is unknown from then on.
    let dir = TempDir::new("closed");
    let p = dir.path("f");
    std::fs::write(&p, b"x").unwrap();
    let f = open(&mut h, &p, "r");
    h.call(Op::Close { handle: f }).unwrap();
    let err = h.call(Op::Close { handle: f }).unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownHandle);
    assert_eq!(err.message, format!("close on handle#{}", f.0));
    // The wrong kind of handle is refused as well.
    let run = h
        .call(Op::RunAsync(provium_protocol::RunSpec {
            program: b"true".to_vec(),
            ..Default::default()
        }))
        .unwrap();
    let Reply::Process { handle: p, .. } = run else {
        panic!("{run:?}")
    };
    let err = h.call(Op::FileRead { handle: p, len: 1 }).unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownHandle);
    assert!(err.message.contains("not a file"), "{}", err.message);
    h.call(Op::Close { handle: p }).unwrap();
}

fn mkfifo(p: &std::path::Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn fifo_reads_wait_off_the_reader_thread_and_ioctl_fionread() {
    let mut h = start();
    let dir = TempDir::new("fifo");
    let p = dir.path("fifo");
    mkfifo(&p);
    // Opening for reading does not wait for a writer.
    let f = open(&mut h, &p, "r");
    let mut writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();

    // A read with nothing to read waits, but the connection goes on.
    let read_id = h.start_call(Op::FileRead {
        handle: f,
        len: 100,
    });
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    writer.write_all(b"hello").unwrap();
    match h.recv() {
        AgentMsg::Reply { id, result } => {
            assert_eq!(id, read_id);
            assert_eq!(result, Ok(Reply::Bytes(bb("hello"))));
        }
        other => panic!("{other:?}"),
    }

    // FIONREAD on the FIFO: the kernel writes the count into `data`.
    writer.write_all(b"12345").unwrap();
    let reply = h
        .call(Op::Ioctl(IoctlSpec {
            handle: f,
            cmd: FIONREAD,
            data: ByteBuf::from(vec![0u8; 4]),
            bufs: vec![],
            ptr_offsets: vec![],
        }))
        .unwrap();
    let Reply::Ioctl { ret, data, bufs } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(ret, 0);
    assert_eq!(i32::from_ne_bytes(data[..4].try_into().unwrap()), 5);
    assert!(bufs.is_empty());
    assert_eq!(read(&mut h, f, 100), b"12345");

    // A failing ioctl is an OS failure.
    let err = h
        .call(Op::Ioctl(IoctlSpec {
            handle: f,
            cmd: TCGETS,
            data: ByteBuf::from(vec![0u8; 64]),
            bufs: vec![],
            ptr_offsets: vec![],
        }))
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, libc::ENOTTY);

    // Closing the handle wakes a read that waits.
    let read_id = h.start_call(Op::FileRead {
        handle: f,
        len: 100,
    });
    std::thread::sleep(Duration::from_millis(50));
    let close_id = h.start_call(Op::Close { handle: f });
    let mut got = Vec::new();
    for _ in 0..2 {
        match h.recv() {
            AgentMsg::Reply { id, result } => got.push((id, result)),
            other => panic!("{other:?}"),
        }
    }
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(got[0].0, read_id);
    let err = got[0].1.clone().unwrap_err();
    assert_eq!(err.errno, libc::EBADF, "{err:?}");
    assert_eq!(got[1], (close_id, Ok(Reply::Unit)));

    // End of file once the writer is gone.
    let f = open(&mut h, &p, "r");
    let mut w2 = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    w2.write_all(b"last").unwrap();
    drop(w2);
    drop(writer);
    assert_eq!(read(&mut h, f, 100), b"last");
    assert_eq!(read(&mut h, f, 100), b"");
    h.call(Op::Close { handle: f }).unwrap();
}

#[test]
fn ioctl_splices_buffer_addresses() {
    // FIONREAD through a pointer would need a driver that takes a struct
    // with pointers; check the splicing through the returned `data`
    // instead: an ioctl that fails leaves it alone, so use one that only
    // reads (FIONBIO reads an int) and verify the spliced address comes
    // back in place.
    let mut h = start();
    let dir = TempDir::new("splice");
    let p = dir.path("fifo");
    mkfifo(&p);
    let f = open(&mut h, &p, "r");
    let mut data = vec![0u8; 24];
    data[..4].copy_from_slice(&1i32.to_ne_bytes());
    let reply = h
        .call(Op::Ioctl(IoctlSpec {
            handle: f,
            cmd: FIONBIO,
            data: ByteBuf::from(data),
            bufs: vec![bb("aux"), bb("never")],
            ptr_offsets: vec![8, 20],
        }))
        .unwrap();
    let Reply::Ioctl { ret, data, bufs } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(ret, 0);
    let addr = u64::from_ne_bytes(data[8..16].try_into().unwrap());
    assert_ne!(addr, 0, "address spliced at offset 8");
    assert_eq!(&data[16..24], &[0; 8], "offset 20 does not fit: skipped");
    assert_eq!(bufs, vec![bb("aux"), bb("never")]);
    h.call(Op::Close { handle: f }).unwrap();
}
