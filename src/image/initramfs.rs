//! The initramfs: a newc cpio archive, written with the `cpio` crate (it writes
//! every field of the newc header, so directories, symlinks and character devices
//! with their device numbers are plain entries with the right mode bits).
//!
//! Output is deterministic: entries sorted by path (a parent sorts before its
//! children), inode numbers in that order, owner and mode fixed, mtime 0.
//!
//! Uncompressed on purpose: compressing made no measurable difference to boot time
//! under TCG (the archive is ~4 MB and loads from the page cache), and an
//! uncompressed archive lets the VM layer append a second one (`extra_cpio`) as
//! plain bytes. The kernel unpacks concatenated archives in order; a later entry
//! replaces an earlier one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use cpio::newc::{self, ModeFileType};

use super::modules::Module;

/// Where the modules go, with `order` listing their file names in load order.
pub(crate) const MODULE_DIR: &str = "lib/modules/provium";

/// Directories of the image that are not plain `0755 root:root`, and every
/// directory that must exist even when empty: `(path, mode, uid, gid)`.
const DIRS: &[(&str, u32, u32, u32)] = &[
    ("bin", 0o755, 0, 0),
    ("dev", 0o755, 0, 0),
    ("dev/pts", 0o755, 0, 0),
    ("etc", 0o755, 0, 0),
    ("home", 0o755, 0, 0),
    ("home/user", 0o755, 1000, 1000),
    ("lib", 0o755, 0, 0),
    ("lib/modules", 0o755, 0, 0),
    (MODULE_DIR, 0o755, 0, 0),
    ("mnt", 0o755, 0, 0),
    ("proc", 0o555, 0, 0),
    ("root", 0o700, 0, 0),
    ("run", 0o755, 0, 0),
    ("sbin", 0o755, 0, 0),
    ("sys", 0o555, 0, 0),
    ("tmp", 0o1777, 0, 0),
    ("usr", 0o755, 0, 0),
    ("usr/bin", 0o755, 0, 0),
    ("usr/sbin", 0o755, 0, 0),
    ("var", 0o755, 0, 0),
    ("var/log", 0o755, 0, 0),
];

/// Symlinks of the image besides BusyBox's applets.
const LINKS: &[(&str, &str)] = &[("var/run", "/run"), ("etc/mtab", "/proc/self/mounts")];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost provium\n::1\tlocalhost ip6-localhost ip6-loopback\n";
const PROFILE: &str = "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
export HOME=\"${HOME:-/root}\"\n\
PS1='\\u@\\h:\\w\\$ '\n";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node<'a> {
    Dir,
    File(Cow<'a, [u8]>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    node: Node<'a>,
    /// Permission bits (with setuid/setgid/sticky), no file type.
    perm: u32,
    uid: u32,
    gid: u32,
}

/// The entries of an archive by path (relative, no leading `/`).
#[derive(Debug, Default)]
pub(crate) struct Tree<'a> {
    entries: BTreeMap<String, Entry<'a>>,
}

impl<'a> Tree<'a> {
    fn insert(&mut self, path: &str, node: Node<'a>, perm: u32, uid: u32, gid: u32) {
        let entry = Entry {
            node,
            perm: perm & 0o7777,
            uid,
            gid,
        };
        self.entries.insert(path.to_string(), entry);
    }

    fn dir(&mut self, path: &str, perm: u32, uid: u32, gid: u32) {
        self.insert(path, Node::Dir, perm, uid, gid);
    }

    fn file(&mut self, path: &str, data: impl Into<Cow<'a, [u8]>>, perm: u32) {
        self.insert(path, Node::File(data.into()), perm, 0, 0);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_string()), 0o777, 0, 0);
    }

    fn char_dev(&mut self, path: &str, major: u32, minor: u32, perm: u32) {
        self.insert(path, Node::CharDev { major, minor }, perm, 0, 0);
    }

    /// Adds every missing ancestor directory. An ancestor the default image has
    /// gets the same metadata here (an archive appended later would otherwise
    /// change it: the kernel chowns and chmods a directory that already exists,
    /// and replaces a symlink by a directory); others are `0755 root:root`.
    fn add_parents(&mut self) {
        let mut missing = Vec::new();
        for path in self.entries.keys() {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if !self.entries.contains_key(parent) {
                    missing.push(parent.to_string());
                }
                at = parent;
            }
        }
        for parent in missing {
            if self.entries.contains_key(&parent) {
                continue;
            }
            if let Some((_, target)) = LINKS.iter().find(|(p, _)| *p == parent) {
                self.symlink(&parent, target);
            } else if let Some(&(_, perm, uid, gid)) = DIRS.iter().find(|(p, ..)| *p == parent) {
                self.dir(&parent, perm, uid, gid);
            } else {
                self.dir(&parent, 0o755, 0, 0);
            }
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The newc archive, trailer included; its length is a multiple of 4, so
    /// another archive can follow directly.
    pub(crate) fn to_cpio(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|(p, e)| 120 + p.len() + data_of(&e.node).len())
            .sum();
        let mut out = Vec::with_capacity(size + 128);
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let data = data_of(&entry.node);
            // newc sizes are 32 bits; only a caller-supplied file can be larger,
            // and such a file cannot be in an initramfs that fits in guest memory.
            let Ok(len) = u32::try_from(data.len()) else {
                continue;
            };
            let (kind, nlink, (major, minor)) = match &entry.node {
                Node::Dir => (ModeFileType::Directory, 2, (0, 0)),
                Node::File(_) => (ModeFileType::Regular, 1, (0, 0)),
                Node::Symlink(_) => (ModeFileType::Symlink, 1, (0, 0)),
                Node::CharDev { major, minor } => (ModeFileType::Char, 1, (*major, *minor)),
            };
            let header = newc::Builder::new(path)
                .ino(ino)
                .mode(entry.perm)
                .set_mode_file_type(kind)
                .uid(entry.uid)
                .gid(entry.gid)
                .nlink(nlink)
                .mtime(0)
                .rdev_major(major)
                .rdev_minor(minor);
            let mut writer = header.write(&mut out, len);
            // Writing into a Vec cannot fail, and `len` is exactly data's length.
            writer
                .write_all(data)
                .and_then(|()| writer.finish().map(|_| ()))
                .expect("writing a cpio entry into memory");
        }
        newc::trailer(&mut out).expect("writing the cpio trailer into memory");
        out
    }
}

fn data_of<'b>(node: &'b Node<'_>) -> &'b [u8] {
    match node {
        Node::File(d) => d,
        Node::Symlink(t) => t.as_bytes(),
        Node::Dir | Node::CharDev { .. } => &[],
    }
}

/// A relative path without `.`/`..`/empty components: what may name an entry.
pub(crate) fn is_plain_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// What goes into the default image.
pub(crate) struct Inputs<'a> {
    /// `/init`: the agent.
    pub init: &'a [u8],
    /// The static BusyBox binary.
    pub busybox: &'a [u8],
    /// `busybox --list-full` (relative paths), each linked to `/bin/busybox`.
    pub applets: &'a [String],
    /// Modules in load order.
    pub modules: &'a [Module],
}

/// The default image's tree.
pub(crate) fn main_tree<'a>(inputs: &Inputs<'a>) -> Tree<'a> {
    let mut t = Tree::default();
    for &(path, perm, uid, gid) in DIRS {
        t.dir(path, perm, uid, gid);
    }
    for &(path, target) in LINKS {
        t.symlink(path, target);
    }
    // Nodes the kernel needs before anything mounts devtmpfs over /dev.
    t.char_dev("dev/console", 5, 1, 0o600);
    t.char_dev("dev/null", 1, 3, 0o666);
    for applet in inputs.applets {
        if is_plain_relative_path(applet) && applet != "bin/busybox" {
            t.symlink(applet, "/bin/busybox");
        }
    }
    t.file("bin/busybox", inputs.busybox, 0o755);
    t.file("init", inputs.init, 0o755);
    t.file("etc/hostname", &b"provium\n"[..], 0o644);
    t.file("etc/passwd", PASSWD.as_bytes(), 0o644);
    t.file("etc/group", GROUP.as_bytes(), 0o644);
    t.file("etc/hosts", HOSTS.as_bytes(), 0o644);
    t.file("etc/profile", PROFILE.as_bytes(), 0o644);
    // No /etc/syslog.conf: BusyBox syslogd then writes /var/log/messages.
    let mut order = String::new();
    for m in inputs.modules {
        let file = format!("{}.ko", m.name);
        t.file(&format!("{MODULE_DIR}/{file}"), m.bytes.as_slice(), 0o644);
        order.push_str(&file);
        order.push('\n');
    }
    t.file(&format!("{MODULE_DIR}/order"), order.into_bytes(), 0o644);
    t.add_parents();
    t
}

/// Builds a small newc archive holding `files` (`(path, content, mode)`; only the
/// permission bits of `mode` are used) and their parent directories, to be
/// appended to the image's initramfs: the kernel unpacks both, later entries
/// replacing earlier ones. Paths may start with `/`; empty, `.` and `..`
/// components are dropped. Of two files with the same path the later one is kept.
/// Parent directories that the default image has get its owner and mode, so
/// appending this archive does not change them. A file of 4 GiB or more cannot be
/// expressed in newc and is left out.
pub fn extra_cpio(files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut t = Tree::default();
    for (path, content, mode) in files {
        let clean: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect();
        if clean.is_empty() {
            continue;
        }
        t.file(&clean.join("/"), content.as_slice(), *mode);
    }
    t.add_parents();
    t.to_cpio()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    #[derive(Debug, Clone, PartialEq)]
    struct Parsed {
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
        ino: u32,
        mtime: u32,
    }

    /// Reads an archive back with the `cpio` crate's reader: names in order, entries.
    fn parse(mut archive: &[u8]) -> (Vec<String>, HashMap<String, Parsed>) {
        let mut names = Vec::new();
        let mut entries = HashMap::new();
        loop {
            let mut reader = newc::Reader::new(archive).expect("entry header");
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry().clone();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("entry data");
            names.push(e.name().to_string());
            entries.insert(
                e.name().to_string(),
                Parsed {
                    mode: e.mode(),
                    uid: e.uid(),
                    gid: e.gid(),
                    rdev: (e.rdev_major(), e.rdev_minor()),
                    data,
                    ino: e.ino(),
                    mtime: e.mtime(),
                },
            );
            archive = reader.finish().expect("next entry");
        }
        (names, entries)
    }

    fn inputs_fixture() -> (Vec<String>, Vec<Module>) {
        let applets = [
            "bin/sh",
            "sbin/syslogd",
            "usr/bin/logger",
            "linuxrc",
            "bin/busybox",
            "../evil",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let modules = vec![
            Module {
                name: "virtio_ring".into(),
                bytes: b"ring".to_vec(),
            },
            Module {
                name: "virtio".into(),
                bytes: b"virtio!".to_vec(),
            },
        ];
        (applets, modules)
    }

    #[test]
    fn main_image_layout() {
        let (applets, modules) = inputs_fixture();
        let tree = main_tree(&Inputs {
            init: b"\x7fELF agent",
            busybox: b"\x7fELF busybox",
            applets: &applets,
            modules: &modules,
        });
        let archive = tree.to_cpio();
        assert_eq!(archive.len() % 4, 0);
        let (names, e) = parse(&archive);
        assert_eq!(names.len(), tree.len());
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are sorted");
        for name in &names {
            if let Some((parent, _)) = name.rsplit_once('/') {
                let pi = names
                    .iter()
                    .position(|n| n == parent)
                    .expect("parent present");
                let ci = names.iter().position(|n| n == name).expect("child");
                assert!(pi < ci, "{parent} before {name}");
            }
            assert_eq!(e[name].mtime, 0);
        }
        let mut inos: Vec<u32> = e.values().map(|p| p.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), e.len(), "unique inode numbers");

        assert_eq!(e["init"].mode, 0o100755);
        assert_eq!(e["init"].data, b"\x7fELF agent");
        assert_eq!(e["bin/busybox"].mode, 0o100755);
        assert_eq!(e["bin/busybox"].data, b"\x7fELF busybox");
        for link in ["bin/sh", "sbin/syslogd", "usr/bin/logger", "linuxrc"] {
            assert_eq!(e[link].mode, 0o120777, "{link}");
            assert_eq!(e[link].data, b"/bin/busybox", "{link}");
        }
        assert!(!e.contains_key("../evil") && !e.contains_key("evil"));
        assert_eq!(e["dev/console"].mode, 0o020600);
        assert_eq!(e["dev/console"].rdev, (5, 1));
        assert_eq!(e["dev/null"].mode, 0o020666);
        assert_eq!(e["dev/null"].rdev, (1, 3));
        assert_eq!(e["tmp"].mode, 0o041777);
        assert_eq!(e["root"].mode, 0o040700);
        assert_eq!((e["home/user"].uid, e["home/user"].gid), (1000, 1000));
        for d in [
            "dev/pts", "proc", "sys", "run", "var/log", "mnt", "usr/bin", MODULE_DIR,
        ] {
            assert_eq!(e[d].mode & 0o170000, 0o040000, "{d} is a directory");
        }
        assert_eq!(e["var/run"].data, b"/run");
        assert_eq!(e["etc/hostname"].data, b"provium\n");
        assert_eq!(e["etc/hostname"].mode, 0o100644);
        let passwd = String::from_utf8_lossy(&e["etc/passwd"].data).into_owned();
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(passwd.contains("user:x:1000:1000:user:/home/user:/bin/sh\n"));
        assert!(passwd.contains(":65534:65534:"));
        let group = String::from_utf8_lossy(&e["etc/group"].data).into_owned();
        assert!(
            group.contains("root:x:0:")
                && group.contains("user:x:1000:")
                && group.contains("nogroup:x:65534:")
        );
        assert!(
            String::from_utf8_lossy(&e["etc/hosts"].data).contains("127.0.0.1\tlocalhost provium")
        );
        assert!(!e.contains_key("etc/syslog.conf"));
        assert_eq!(
            e[&format!("{MODULE_DIR}/order")].data,
            b"virtio_ring.ko\nvirtio.ko\n"
        );
        assert_eq!(e[&format!("{MODULE_DIR}/virtio.ko")].data, b"virtio!");
    }

    #[test]
    fn deterministic() {
        let (applets, modules) = inputs_fixture();
        let build = || {
            main_tree(&Inputs {
                init: b"agent",
                busybox: b"bb",
                applets: &applets,
                modules: &modules,
            })
            .to_cpio()
        };
        assert!(build() == build());
        let files = vec![("/etc/x".to_string(), b"1".to_vec(), 0o600)];
        assert_eq!(extra_cpio(&files), extra_cpio(&files));
    }

    #[test]
    fn extra_archive() {
        let files = vec![
            ("/etc/motd".to_string(), b"first".to_vec(), 0o644),
            ("home/user/.profile".to_string(), b"x".to_vec(), 0o100600),
            (
                "/opt/app/./run.sh".to_string(),
                b"#!/bin/sh\n".to_vec(),
                0o4755,
            ),
            ("/var/run/app.pid".to_string(), b"1".to_vec(), 0o644),
            ("/etc/motd".to_string(), b"second".to_vec(), 0o644),
            ("/../../tmp/f".to_string(), Vec::new(), 0o666),
            ("///".to_string(), b"ignored".to_vec(), 0o644),
        ];
        let archive = extra_cpio(&files);
        assert_eq!(archive.len() % 4, 0);
        let (names, e) = parse(&archive);
        assert_eq!(
            names,
            [
                "etc",
                "etc/motd",
                "home",
                "home/user",
                "home/user/.profile",
                "opt",
                "opt/app",
                "opt/app/run.sh",
                "tmp",
                "tmp/f",
                "var",
                "var/run",
                "var/run/app.pid",
            ]
        );
        assert_eq!(e["etc/motd"].data, b"second");
        assert_eq!(e["home/user/.profile"].mode, 0o100600);
        assert_eq!(e["opt/app/run.sh"].mode, 0o104755);
        assert_eq!(e["tmp/f"].mode, 0o100666);
        // Parents the default image has keep its metadata.
        assert_eq!(e["tmp"].mode, 0o041777);
        assert_eq!(
            (e["home/user"].uid, e["home/user"].gid, e["home/user"].mode),
            (1000, 1000, 0o040755)
        );
        assert_eq!(e["var/run"].mode, 0o120777);
        assert_eq!(e["var/run"].data, b"/run");
        assert_eq!(e["opt"].mode, 0o040755);
        // An empty list still makes a valid (trailer-only) archive.
        let (names, _) = parse(&extra_cpio(&[]));
        assert!(names.is_empty());
    }

    #[test]
    fn concatenated_archives_parse_in_sequence() {
        let a = extra_cpio(&[("a".to_string(), b"1".to_vec(), 0o644)]);
        let b = extra_cpio(&[("b".to_string(), b"22".to_vec(), 0o644)]);
        let mut both = a.clone();
        both.extend_from_slice(&b);
        // The second archive starts right after the first one's trailer.
        let (names, _) = parse(&both[a.len()..]);
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn plain_relative_paths() {
        assert!(is_plain_relative_path("usr/bin/logger"));
        for bad in ["", "/bin/sh", "bin//sh", "bin/../sh", "./sh", "bin/"] {
            assert!(!is_plain_relative_path(bad), "{bad}");
        }
    }
}
