//! File operations through `conn::serve`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{bytes, start, TempDir};
use provium_protocol::{
    EntryType, FailureKind, FileAttrs, HostMsg, Op, Reply, CHUNK_LEN, CH_BODY, CH_SIZE_HINT,
};
use serde_bytes::ByteBuf;

fn stat(h: &mut common::Host, p: &std::path::Path, follow: bool) -> provium_protocol::StatInfo {
    match h.call(Op::Stat {
        path: bytes(p),
        follow,
    }) {
        Ok(Reply::Stat(st)) => st,
        other => panic!("stat {}: {other:?}", p.display()),
    }
}

#[test]
fn stat_file_dir_and_symlink() {
    let mut h = start();
    let dir = TempDir::new("stat");
    let file = dir.path("file");
    std::fs::write(&file, b"hello world").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();

    let st = stat(&mut h, &file, true);
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!(st.size, 11);
    assert_eq!(st.perm(), 0o640);
    assert_eq!(st.entry_type(), EntryType::File);
    assert_eq!(st.ino, m.ino());
    assert_eq!(st.nlink, 1);
    assert_eq!(st.uid, m.uid());
    assert_eq!(st.gid, m.gid());
    assert_eq!(st.dev, m.dev());
    assert_eq!(st.blksize, m.blksize());
    assert_eq!(st.mtime_ns, m.mtime() * 1_000_000_000 + m.mtime_nsec());
    assert_eq!(st.atime_ns, m.atime() * 1_000_000_000 + m.atime_nsec());
    assert_eq!(st.ctime_ns, m.ctime() * 1_000_000_000 + m.ctime_nsec());
    assert!(st.mtime_ns > 1_500_000_000 * 1_000_000_000);

    let st = stat(&mut h, &dir.0, true);
    assert_eq!(st.entry_type(), EntryType::Directory);

    let st = stat(&mut h, &link, true);
    assert_eq!(st.entry_type(), EntryType::File);
    assert_eq!(st.size, 11);
    let st = stat(&mut h, &link, false);
    assert_eq!(st.entry_type(), EntryType::Symlink);
    assert_eq!(st.size, bytes(&file).len() as u64);

    let st = stat(&mut h, std::path::Path::new("/dev/null"), true);
    assert_eq!(st.entry_type(), EntryType::CharDevice);
    assert_ne!(st.rdev, 0);
}

#[test]
fn stat_missing_is_enoent() {
    let mut h = start();
    let dir = TempDir::new("enoent");
    let err = h
        .call(Op::Stat {
            path: bytes(&dir.path("nope")),
            follow: true,
        })
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Os);
    assert_eq!(err.errno, 2);
    assert_eq!(err.message, "No such file or directory");
}

fn read_file(h: &mut common::Host, p: &std::path::Path) -> (Vec<usize>, Vec<u8>) {
    let (data, result) = h.call_full(Op::ReadFile { path: bytes(p) });
    let Ok(Reply::Bytes(tail)) = result else {
        panic!("read_file {}: {result:?}", p.display())
    };
    assert!(tail.len() <= CHUNK_LEN);
    for size in data.sizes(CH_BODY) {
        assert!(size <= CHUNK_LEN && size > 0);
    }
    // Besides the body, at most one size hint (a u64, before the chunks).
    if let Some((sizes, hint)) = data.0.get(&CH_SIZE_HINT) {
        assert_eq!(sizes, &vec![8]);
        let hinted = u64::from_le_bytes(hint[..].try_into().unwrap());
        assert_eq!(hinted, std::fs::metadata(p).unwrap().len());
    }
    let others = |c: &&u8| **c != CH_BODY && **c != CH_SIZE_HINT;
    assert_eq!(data.0.keys().filter(others).count(), 0);
    let mut all = data.bytes(CH_BODY);
    all.extend(tail.into_vec());
    (data.sizes(CH_BODY), all)
}

#[test]
fn read_file_small_and_exact_chunk() {
    let mut h = start();
    let dir = TempDir::new("readsmall");
    std::fs::write(dir.path("small"), b"tiny").unwrap();
    let (frames, all) = read_file(&mut h, &dir.path("small"));
    assert!(frames.is_empty());
    assert_eq!(all, b"tiny");

    std::fs::write(dir.path("empty"), b"").unwrap();
    let (frames, all) = read_file(&mut h, &dir.path("empty"));
    assert!(frames.is_empty() && all.is_empty());

    let exact = vec![7u8; CHUNK_LEN];
    std::fs::write(dir.path("exact"), &exact).unwrap();
    let (frames, all) = read_file(&mut h, &dir.path("exact"));
    assert_eq!(
        frames,
        vec![CHUNK_LEN],
        "a file of one whole chunk comes as one Data frame and an empty reply"
    );
    assert!(all == exact);
}

#[test]
fn read_file_multi_chunk() {
    let mut h = start();
    let dir = TempDir::new("readbig");
    let content: Vec<u8> = (0..(1 << 20) + 3)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(dir.path("big"), &content).unwrap();
    let (frames, all) = read_file(&mut h, &dir.path("big"));
    let mut want = vec![CHUNK_LEN; (1 << 20) / CHUNK_LEN];
    want.push(3);
    assert_eq!(frames, want);
    assert_eq!(all.len(), content.len());
    assert!(all == content);
}

#[test]
fn read_file_of_unknown_size() {
    let mut h = start();
    let (_, all) = read_file(&mut h, std::path::Path::new("/proc/self/status"));
    let text = String::from_utf8(all).unwrap();
    assert!(text.contains("Pid:"), "{text}");
}

#[test]
fn read_file_errors() {
    let mut h = start();
    let dir = TempDir::new("readerr");
    let err = h
        .call(Op::ReadFile {
            path: bytes(&dir.path("missing")),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
    let err = h
        .call(Op::ReadFile {
            path: bytes(&dir.0),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::EISDIR);
    assert_eq!(err.message, "Is a directory");
}

#[test]
fn write_file_single_and_perm() {
    let mut h = start();
    let dir = TempDir::new("write");
    let p = dir.path("a");
    let r = h.call(Op::WriteFile {
        path: bytes(&p),
        attrs: FileAttrs::default(),
        data: ByteBuf::from(b"one".to_vec()),
        more: false,
    });
    assert_eq!(r, Ok(Reply::Unit));
    assert_eq!(std::fs::read(&p).unwrap(), b"one");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    // Truncates an existing file; perm applies to it too, umask or not.
    let r = h.call(Op::WriteFile {
        path: bytes(&p),
        attrs: FileAttrs {
            perm: Some(0o600),
            ..FileAttrs::default()
        },
        data: ByteBuf::from(b"2".to_vec()),
        more: false,
    });
    assert_eq!(r, Ok(Reply::Unit));
    assert_eq!(std::fs::read(&p).unwrap(), b"2");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let q = dir.path("b");
    h.call(Op::WriteFile {
        path: bytes(&q),
        attrs: FileAttrs {
            perm: Some(0o600),
            ..FileAttrs::default()
        },
        data: ByteBuf::new(),
        more: false,
    })
    .unwrap();
    assert_eq!(
        std::fs::metadata(&q).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let err = h
        .call(Op::WriteFile {
            path: bytes(&dir.path("no/such/dir")),
            attrs: FileAttrs::default(),
            data: ByteBuf::new(),
            more: false,
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn write_file_in_chunks() {
    let mut h = start();
    let dir = TempDir::new("writechunks");
    let p = dir.path("big");
    let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100_000 + i as usize]).collect();
    let id = h.start_call(Op::WriteFile {
        path: bytes(&p),
        attrs: FileAttrs::default(),
        data: ByteBuf::from(parts[0].clone()),
        more: true,
    });
    // Other calls are served while the upload is open.
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    for (i, part) in parts.iter().enumerate().skip(1) {
        h.send(&HostMsg::Data {
            id,
            chunk: ByteBuf::from(part.clone()),
            last: i == parts.len() - 1,
        });
    }
    let (_, result) = h.finish_call(id);
    assert_eq!(result, Ok(Reply::Unit));
    assert!(std::fs::read(&p).unwrap() == parts.concat());

    // An upload can end with an empty last chunk.
    let id = h.start_call(Op::WriteFile {
        path: bytes(&p),
        attrs: FileAttrs::default(),
        data: ByteBuf::from(b"x".to_vec()),
        more: true,
    });
    h.send(&HostMsg::Data {
        id,
        chunk: ByteBuf::new(),
        last: true,
    });
    assert_eq!(h.finish_call(id).1, Ok(Reply::Unit));
    assert_eq!(std::fs::read(&p).unwrap(), b"x");
}

#[test]
fn failed_upload_is_answered_once() {
    let mut h = start();
    let dir = TempDir::new("uploadfail");
    let id = h.start_call(Op::WriteFile {
        path: bytes(&dir.path("missing/f")),
        attrs: FileAttrs::default(),
        data: ByteBuf::from(b"x".to_vec()),
        more: true,
    });
    let (_, result) = h.finish_call(id);
    assert_eq!(result.unwrap_err().errno, libc::ENOENT);
    // The chunks that follow are dropped silently.
    for last in [false, true] {
        h.send(&HostMsg::Data {
            id,
            chunk: ByteBuf::from(b"y".to_vec()),
            last,
        });
    }
    assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));

    // Writing into a full device fails on a chunk: one failure, then silence.
    if std::path::Path::new("/dev/full").exists() {
        let id = h.start_call(Op::WriteFile {
            path: b"/dev/full".to_vec(),
            attrs: FileAttrs::default(),
            data: ByteBuf::new(),
            more: true,
        });
        h.send(&HostMsg::Data {
            id,
            chunk: ByteBuf::from(b"y".to_vec()),
            last: false,
        });
        let (_, result) = h.finish_call(id);
        assert_eq!(result.unwrap_err().errno, libc::ENOSPC);
        h.send(&HostMsg::Data {
            id,
            chunk: ByteBuf::from(b"z".to_vec()),
            last: true,
        });
        assert_eq!(h.call(Op::Ping), Ok(Reply::Unit));
    }
}

#[test]
fn cancelled_upload_is_answered() {
    let mut h = start();
    let dir = TempDir::new("cancel");
    let id = h.start_call(Op::WriteFile {
        path: bytes(&dir.path("f")),
        attrs: FileAttrs::default(),
        data: ByteBuf::from(b"x".to_vec()),
        more: true,
    });
    h.send(&HostMsg::Cancel { id });
    let (_, result) = h.finish_call(id);
    assert_eq!(result.unwrap_err().errno, libc::ECANCELED);
}

#[test]
fn list_dir() {
    let mut h = start();
    let dir = TempDir::new("listdir");
    std::fs::write(dir.path("file"), b"").unwrap();
    std::fs::create_dir(dir.path("sub")).unwrap();
    std::os::unix::fs::symlink("file", dir.path("link")).unwrap();
    let Ok(Reply::Entries(mut entries)) = h.call(Op::ListDir {
        path: bytes(&dir.0),
    }) else {
        panic!()
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let got: Vec<(Vec<u8>, EntryType)> = entries
        .into_iter()
        .map(|e| (e.name, e.entry_type))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"file".to_vec(), EntryType::File),
            (b"link".to_vec(), EntryType::Symlink),
            (b"sub".to_vec(), EntryType::Directory),
        ]
    );
    let err = h
        .call(Op::ListDir {
            path: bytes(&dir.path("file")),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOTDIR);
}

#[test]
fn mkdir_with_and_without_parents() {
    let mut h = start();
    let dir = TempDir::new("mkdir");
    let deep = dir.path("a/b/c");
    let err = h
        .call(Op::Mkdir {
            path: bytes(&deep),
            parents: false,
            perm: None,
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
    for _ in 0..2 {
        let r = h.call(Op::Mkdir {
            path: bytes(&deep),
            parents: true,
            perm: None,
        });
        assert_eq!(r, Ok(Reply::Unit));
    }
    assert!(deep.is_dir());
    assert_eq!(
        std::fs::metadata(&deep).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let err = h
        .call(Op::Mkdir {
            path: bytes(&deep),
            parents: false,
            perm: None,
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::EEXIST);
    let p = dir.path("private");
    h.call(Op::Mkdir {
        path: bytes(&p),
        parents: false,
        perm: Some(0o700),
    })
    .unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o700
    );
}

#[test]
fn unlink_files_and_dirs() {
    let mut h = start();
    let dir = TempDir::new("unlink");
    std::fs::write(dir.path("f"), b"").unwrap();
    std::fs::create_dir(dir.path("empty")).unwrap();
    std::fs::create_dir(dir.path("full")).unwrap();
    std::fs::write(dir.path("full/x"), b"").unwrap();
    assert_eq!(
        h.call(Op::Unlink {
            path: bytes(&dir.path("f"))
        }),
        Ok(Reply::Unit)
    );
    assert!(!dir.path("f").exists());
    assert_eq!(
        h.call(Op::Unlink {
            path: bytes(&dir.path("empty"))
        }),
        Ok(Reply::Unit)
    );
    assert!(!dir.path("empty").exists());
    let err = h
        .call(Op::Unlink {
            path: bytes(&dir.path("full")),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOTEMPTY);
    assert_eq!(err.message, "Directory not empty");
    let err = h
        .call(Op::Unlink {
            path: bytes(&dir.path("f")),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn rename() {
    let mut h = start();
    let dir = TempDir::new("rename");
    std::fs::write(dir.path("a"), b"content").unwrap();
    let r = h.call(Op::Rename {
        from: bytes(&dir.path("a")),
        to: bytes(&dir.path("b")),
    });
    assert_eq!(r, Ok(Reply::Unit));
    assert!(!dir.path("a").exists());
    assert_eq!(std::fs::read(dir.path("b")).unwrap(), b"content");
    let err = h
        .call(Op::Rename {
            from: bytes(&dir.path("a")),
            to: bytes(&dir.path("c")),
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn chmod_sets_exact_mode() {
    let mut h = start();
    let dir = TempDir::new("chmod");
    let p = dir.path("f");
    std::fs::write(&p, b"x").unwrap();
    let r = h.call(Op::Chmod {
        path: bytes(&p),
        mode: 0o4751,
    });
    assert_eq!(r, Ok(Reply::Unit));
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o4751
    );
    // Only the permission bits count.
    h.call(Op::Chmod {
        path: bytes(&p),
        mode: 0o100600,
    })
    .unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let err = h
        .call(Op::Chmod {
            path: bytes(&dir.path("missing")),
            mode: 0o644,
        })
        .unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
}

#[test]
fn write_file_owner() {
    let mut h = start();
    let dir = TempDir::new("owner");
    let p = dir.path("f");
    // Our own uid/gid always work, root or not.
    let uid = unsafe { libc::geteuid() };
    let gid = unsafe { libc::getegid() };
    h.call(Op::WriteFile {
        path: bytes(&p),
        attrs: FileAttrs {
            perm: Some(0o640),
            uid: Some(uid),
            gid: Some(gid),
        },
        data: ByteBuf::from(b"o".to_vec()),
        more: false,
    })
    .unwrap();
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (uid, gid, 0o640)
    );
    if uid != 0 {
        // Giving a file away takes privilege.
        let err = h
            .call(Op::WriteFile {
                path: bytes(&p),
                attrs: FileAttrs {
                    uid: Some(0),
                    ..FileAttrs::default()
                },
                data: ByteBuf::new(),
                more: false,
            })
            .unwrap_err();
        assert_eq!(err.errno, libc::EPERM);
    }
}
