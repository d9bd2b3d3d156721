//! Guest RAM as a memfd the rock owns.
//!
//! QEMU maps it (`memory-backend-file,mem-path=/proc/self/fd/N,share=on`),
//! so the host can read the guest's memory for a snapshot without asking
//! QEMU to stream it (`x-ignore-shared` leaves it out of the device state),
//! and can fill a fresh one from a snapshot before a restore. A memfd dies
//! with its last user: nothing is left behind if the process is killed.
//!
//! Snapshot RAM files are sparse: pages that are all zero are holes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Unit of zero-page elision.
const PAGE: usize = 4096;
/// Copy buffer.
const CHUNK: usize = 1 << 20;

/// The guest's RAM.
pub struct GuestMemory {
    file: File,
    size: u64,
}

impl GuestMemory {
    /// A zero-filled memfd of `mib` MiB (close-on-exec: only the QEMU it is
    /// handed to inherits it, see `super::process`).
    pub fn create(mib: u64) -> io::Result<GuestMemory> {
        // `mib` may come from a snapshot's description as it stands.
        let size = mib.checked_mul(1 << 20).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{mib} MiB of guest RAM is more than a file can hold"),
            )
        })?;
        // SAFETY: the name is a NUL-terminated literal; the flags are valid.
        let fd = unsafe { libc::memfd_create(c"provium-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh descriptor we now own.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(size)?;
        Ok(GuestMemory { file, size })
    }

    /// A second handle on the same memory (a restore fills it while QEMU,
    /// which maps the first, starts).
    pub fn try_clone(&self) -> io::Result<GuestMemory> {
        Ok(GuestMemory {
            file: self.file.try_clone()?,
            size: self.size,
        })
    }

    /// The descriptor QEMU maps.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes the RAM to a new sparse file `dest` (zero pages become holes);
    /// returns the bytes written. The VM must be stopped.
    pub fn save(&self, dest: &Path) -> io::Result<u64> {
        let out = File::options().write(true).create_new(true).open(dest)?;
        let mut written = 0u64;
        for_each_data_chunk(&self.file, self.size, |chunk, off| {
            written += write_nonzero(&out, chunk, off)?;
            Ok(())
        })?;
        out.set_len(self.size)?;
        out.sync_all()?;
        Ok(written)
    }

    /// Fills the RAM from a snapshot file written by [`GuestMemory::save`].
    pub fn load(&self, src: &Path) -> io::Result<()> {
        let input = File::open(src)?;
        let len = input.metadata()?.len();
        if len != self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {len} bytes of guest RAM, the VM has {}",
                    src.display(),
                    self.size
                ),
            ));
        }
        for (start, end) in data_extents(&input, len)? {
            copy_range(&input, &self.file, start, end)?;
        }
        Ok(())
    }
}

/// Reads the data extents of `file` (holes skipped) in chunks of at most
/// [`CHUNK`] bytes and hands each to `f` with its file offset.
fn for_each_data_chunk(
    file: &File,
    len: u64,
    mut f: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for (start, end) in data_extents(file, len)? {
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(CHUNK);
            file.read_exact_at(&mut buf[..n], off)?;
            f(&buf[..n], off)?;
            off += n as u64;
        }
    }
    Ok(())
}

/// Writes the non-zero pages of `buf` (which starts at file offset `at`).
pub(crate) fn write_nonzero(out: &File, buf: &[u8], at: u64) -> io::Result<u64> {
    let mut written = 0u64;
    let mut run_start: Option<usize> = None;
    let mut i = 0;
    while i < buf.len() {
        let end = (i + PAGE).min(buf.len());
        let zero = is_zero(&buf[i..end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                out.write_all_at(&buf[s..i], at + s as u64)?;
                written += (i - s) as u64;
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        out.write_all_at(&buf[s..], at + s as u64)?;
        written += (buf.len() - s) as u64;
    }
    Ok(written)
}

/// Copies `[start, end)` of `from` to the same offsets of `to` with
/// `sendfile`: one copy, from the page cache into the memfd, where a read
/// and a write through a buffer make two (a 64 MiB snapshot: ~40 ms by
/// buffer, see BENCHMARKS.md, issue 12, for the figure with `sendfile`).
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let out = to.as_raw_fd();
    let offset = |v: u64| {
        libc::off_t::try_from(v)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past 2^63"))
    };
    // SAFETY: lseek on a descriptor we hold; no memory is involved.
    if unsafe { libc::lseek(out, offset(start)?, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut off = offset(start)?;
    let end = offset(end)?;
    while off < end {
        let n = ((end - off) as usize).min(1 << 30);
        // SAFETY: both descriptors are held; `off` is a valid off_t that
        // sendfile reads and advances.
        let r = unsafe { libc::sendfile(out, from.as_raw_fd(), &mut off, n) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the snapshot's RAM file ended early",
            ));
        }
    }
    Ok(())
}

fn is_zero(page: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u64; align_to only reinterprets
    // the aligned middle of the slice.
    let (pre, words, post) = unsafe { page.align_to::<u64>() };
    pre.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

/// The `[start, end)` ranges of `file` that hold data (`SEEK_DATA` /
/// `SEEK_HOLE`); the whole file when the file system cannot tell.
fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |off: u64, whence: i32| -> io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor we hold; no memory is involved.
        let r = unsafe { libc::lseek(fd, off as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    };
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < len {
        let start = match seek(off, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(0, len)]),
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if end <= start {
            break;
        }
        out.push((start, end));
        off = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn save_elides_zero_pages_and_load_restores_everything() {
        let dir = std::env::temp_dir().join(format!("provium-mem-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m = GuestMemory::create(4).unwrap();
        m.file.write_all_at(b"hello", 10).unwrap();
        m.file
            .write_all_at(&[7u8; 3 * PAGE], (1 << 20) + 5)
            .unwrap();
        m.file.write_all_at(b"end", m.size() - 3).unwrap();
        let snap = dir.join("ram");
        let written = m.save(&snap).unwrap();
        // Pages touched: page 0, pages 256..=259 (5 bytes into 256, 3 pages long), the last.
        assert_eq!(written, (1 + 4 + 1) * PAGE as u64);
        let meta = std::fs::metadata(&snap).unwrap();
        assert_eq!(meta.len(), m.size());
        assert!(
            meta.blocks() * 512 <= 8 * PAGE as u64,
            "not sparse: {}",
            meta.blocks()
        );

        let m2 = GuestMemory::create(4).unwrap();
        m2.load(&snap).unwrap();
        let mut a = vec![0u8; m.size() as usize];
        let mut b = vec![0u8; m.size() as usize];
        m.file.read_exact_at(&mut a, 0).unwrap();
        m2.file.read_exact_at(&mut b, 0).unwrap();
        assert!(a == b);

        let small = GuestMemory::create(2).unwrap();
        let err = small.load(&snap).unwrap_err();
        assert!(err.to_string().contains("guest RAM"), "{err}");
        assert!(m.save(&snap).is_err(), "save must not overwrite");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Property-based fuzzing of [`GuestMemory::load`] and
/// [`GuestMemory::create`] (run with `-- fuzz`): a RAM file that does not
/// fit is an error that leaves the memory as it was; one that fits comes
/// back byte for byte, holes as zeros.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    use crate::fuzz_config::config;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh, empty directory per case (removed on drop).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "provium-fuzz-ram-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MIB: u64 = 1 << 20;

    /// Data written at an offset of a (otherwise sparse) file.
    fn extents(max_off: u64) -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
        let data = prop_oneof![
            vec(any::<u8>(), 0..6000),
            // Zero pages that are data, not holes.
            (0..3 * PAGE).prop_map(|n| vec![0u8; n]),
        ];
        vec((0..max_off, data), 0..6)
    }

    /// Writes a file of `len` bytes holding `extents` (cut at `len`).
    fn write_file(path: &Path, len: u64, extents: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let f = File::create(path).expect("create");
        let mut expected = vec![0u8; len as usize];
        for (off, data) in extents {
            let end = (off + data.len() as u64).min(len);
            if *off < end {
                let n = (end - off) as usize;
                f.write_all_at(&data[..n], *off).expect("write");
                expected[*off as usize..end as usize].copy_from_slice(&data[..n]);
            }
        }
        f.set_len(len).expect("set_len");
        expected
    }

    fn contents(m: &GuestMemory) -> Vec<u8> {
        let mut all = vec![0u8; m.size() as usize];
        m.file.read_exact_at(&mut all, 0).expect("read memfd");
        all
    }

    /// What stands where the RAM file should be.
    #[derive(Debug, Clone)]
    enum Src {
        /// A file of this many bytes (never the memory's size).
        Sized(u64, Vec<(u64, Vec<u8>)>),
        /// A file of the right size, then cut short.
        Truncated(u64),
        Empty,
        Directory,
        Missing,
        /// A symbolic link to a directory.
        LinkToDirectory,
    }

    fn src() -> impl Strategy<Value = Src> {
        prop_oneof![
            4 => (0..3 * MIB, extents(3 * MIB))
                .prop_filter("not the memory's size", |(len, _)| *len != MIB)
                .prop_map(|(len, e)| Src::Sized(len, e)),
            2 => prop_oneof![0..MIB, Just(MIB - 1), Just(MIB - PAGE as u64)]
                .prop_map(Src::Truncated),
            1 => Just(Src::Empty),
            1 => Just(Src::Directory),
            1 => Just(Src::Missing),
            1 => Just(Src::LinkToDirectory),
        ]
    }

    proptest! {
        #![proptest_config(config(300))]

        #[test]
        fn fuzz_load_refuses_what_does_not_fit(src in src(), seed in any::<u8>()) {
            let dir = TempDir::new();
            let path = dir.0.join("ram");
            match &src {
                Src::Sized(len, e) => {
                    write_file(&path, *len, e);
                }
                Src::Truncated(len) => {
                    write_file(&path, MIB, &[(0, vec![seed | 1; 5000])]);
                    File::options().write(true).open(&path).expect("open").set_len(*len).expect("cut");
                }
                Src::Empty => std::fs::write(&path, b"").expect("write"),
                Src::Directory => std::fs::create_dir(&path).expect("mkdir"),
                Src::Missing => {}
                Src::LinkToDirectory => {
                    std::os::unix::fs::symlink(&dir.0, &path).expect("symlink");
                }
            }
            let m = GuestMemory::create(1).expect("memfd");
            m.file.write_all_at(&[seed; 3 * PAGE], MIB / 2).expect("fill");
            let before = contents(&m);
            prop_assert!(m.load(&path).is_err(), "{src:?} loaded");
            prop_assert!(contents(&m) == before, "{src:?} changed the memory");
        }

        #[test]
        fn fuzz_load_restores_what_fits(extents in extents(MIB)) {
            let dir = TempDir::new();
            let path = dir.0.join("ram");
            let expected = write_file(&path, MIB, &extents);
            let m = GuestMemory::create(1).expect("memfd");
            prop_assert!(m.load(&path).is_ok());
            prop_assert!(contents(&m) == expected, "the memory differs from the file");
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn fuzz_create_refuses_sizes_past_u64(mib in (u64::MAX >> 20) + 1..=u64::MAX) {
            // Such sizes come from a snapshot's `memory_mib` as they stand.
            prop_assert!(GuestMemory::create(mib).is_err());
        }
    }
}
