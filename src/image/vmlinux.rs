//! Getting an ELF `vmlinux` out of a bzImage, and the ELF checks the image needs.
//!
//! QEMU boots an ELF `vmlinux` through its PVH entry point (Xen ELF note 18,
//! `XEN_ELFNOTE_PHYS32_ENTRY`) without running the bzImage's decompressor, which
//! under TCG saves a few hundred milliseconds per boot. The compressed kernel is the
//! bzImage's payload: the setup header (boot protocol 2.08+) says where it is, and a
//! scan for the compressors' magic numbers is the fallback. Debian's cloud kernel
//! uses LZ4 in the *legacy* frame format (`lz4 -l`), decoded here over
//! `lz4_flex`'s block decoder; XZ, gzip and zstd payloads (other distributions'
//! kernels, Debian's generic kernel) go through the host's `xz`, `gzip` and `zstd`
//! tools, which are on every Debian host, rather than three more crates for a path
//! the default image never takes (XZ kernels also use the x86 BCJ filter, which the
//! pure-Rust XZ decoders do not implement).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

/// `lz4 -l` frame magic (0x184C2102, little endian).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Every block of the legacy format decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// ELF note type of the PVH 32-bit entry point, in notes named "Xen".
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    Lz4Legacy,
    Xz,
    Gzip,
    Zstd,
    /// The input was an ELF file already.
    None,
}

impl Compression {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::Lz4Legacy => "LZ4",
            Compression::Xz => "XZ",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "uncompressed",
        }
    }

    fn detect(data: &[u8]) -> Option<Compression> {
        if data.starts_with(&LZ4_LEGACY_MAGIC) {
            Some(Compression::Lz4Legacy)
        } else if data.starts_with(&XZ_MAGIC) {
            Some(Compression::Xz)
        } else if data.starts_with(&GZIP_MAGIC) {
            Some(Compression::Gzip)
        } else if data.starts_with(&ZSTD_MAGIC) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// A decompressed kernel.
#[derive(Debug)]
pub(crate) struct Vmlinux {
    pub elf: Vec<u8>,
    pub compression: Compression,
    pub compressed_len: usize,
}

/// Extracts the ELF kernel from `image` (a bzImage, or an ELF `vmlinux` as is) and
/// checks it is a 64-bit ELF. The PVH note is checked by [`has_pvh_note`].
pub(crate) fn extract(image: &[u8]) -> Result<Vmlinux, String> {
    if image.starts_with(b"\x7fELF") {
        check_elf64(image)?;
        return Ok(Vmlinux {
            elf: image.to_vec(),
            compression: Compression::None,
            compressed_len: image.len(),
        });
    }
    let mut errors = Vec::new();
    if let Some(payload) = bzimage_payload(image) {
        match Compression::detect(payload) {
            Some(c) => match decompress_payload(c, payload, true) {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(format!("{} payload: {e}", c.name())),
            },
            None => errors.push("the setup header's payload has no known compression magic".into()),
        }
    }
    // Fallback: scan for magic numbers; try them in the order they appear.
    let mut candidates: Vec<(usize, Compression)> = [
        (&LZ4_LEGACY_MAGIC[..], Compression::Lz4Legacy),
        (&XZ_MAGIC[..], Compression::Xz),
        (&ZSTD_MAGIC[..], Compression::Zstd),
        (&GZIP_MAGIC[..], Compression::Gzip),
    ]
    .iter()
    .filter_map(|(magic, c)| find(image, magic).map(|at| (at, *c)))
    .collect();
    candidates.sort_by_key(|(at, _)| *at);
    for (at, c) in candidates {
        match decompress_payload(c, &image[at..], false) {
            Ok(v) => return Ok(v),
            Err(e) => errors.push(format!("{} data at offset {at}: {e}", c.name())),
        }
    }
    if errors.is_empty() {
        errors.push("not a bzImage and no LZ4/XZ/gzip/zstd data found".into());
    }
    Err(errors.join("; "))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn le32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The compressed payload of a bzImage, from its setup header (boot protocol
/// 2.08+): `payload_offset` (0x248) and `payload_length` (0x24c), relative to the
/// protected-mode code that follows the `setup_sects` (0x1f1) setup sectors.
pub(crate) fn bzimage_payload(image: &[u8]) -> Option<&[u8]> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let version = u16::from_le_bytes([*image.get(0x206)?, *image.get(0x207)?]);
    if version < 0x0208 {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let offset = usize::try_from(le32(image, 0x248)?).ok()?;
    let length = usize::try_from(le32(image, 0x24c)?).ok()?;
    let start = pm_start.checked_add(offset)?;
    image.get(start..start.checked_add(length)?)
}

/// Decompresses a kernel payload. `exact` says `data` ends where the payload ends
/// (it comes from the setup header): the kernel's build appends the decompressed
/// size as 4 little-endian bytes after LZ4, XZ and zstd data, which is checked.
fn decompress_payload(c: Compression, data: &[u8], exact: bool) -> Result<Vmlinux, String> {
    let elf = match c {
        Compression::Lz4Legacy => {
            let (out, used) = lz4_legacy_decode(data)?;
            let rest = &data[used..];
            if exact && rest.len() == 4 {
                let want = le32(rest, 0).map(|n| n as usize);
                if want != Some(out.len()) {
                    return Err(format!(
                        "decompressed {} bytes but the image says {}",
                        out.len(),
                        want.unwrap_or(0)
                    ));
                }
            }
            out
        }
        Compression::Xz => run_filter("xz", &["-dc", "--single-stream"], "xz-utils", data)?,
        Compression::Gzip => run_filter("gzip", &["-dc"], "gzip", data)?,
        Compression::Zstd => run_filter("zstd", &["-dcq"], "zstd", data)?,
        Compression::None => data.to_vec(),
    };
    check_elf64(&elf)?;
    Ok(Vmlinux {
        elf,
        compression: c,
        compressed_len: data.len(),
    })
}

/// Decodes an LZ4 legacy-format stream: the magic, then blocks each prefixed by
/// its compressed size (4 bytes, little endian), each decompressing to at most
/// 8 MiB. The format has no end mark: the stream ends where the input ends or a
/// size cannot be a block (the kernel appends its decompressed size, which is
/// larger than any block or than what is left). A repeated magic starts a
/// concatenated stream. Returns the data and the number of input bytes consumed.
pub(crate) fn lz4_legacy_decode(input: &[u8]) -> Result<(Vec<u8>, usize), String> {
    if !input.starts_with(&LZ4_LEGACY_MAGIC) {
        return Err("no LZ4 legacy frame magic".into());
    }
    let magic = u32::from_le_bytes(LZ4_LEGACY_MAGIC);
    // LZ4_compressBound of a full block: the largest compressed block there can be.
    let max_block = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4));
    let mut pos = 4;
    while let Some(size) = le32(input, pos) {
        if size == magic {
            pos += 4;
            continue;
        }
        let size = size as usize;
        let start = pos + 4;
        if size == 0 || size > max_block || size > input.len() - start {
            break;
        }
        let block = &input[start..start + size];
        let at = out.len();
        out.resize(at + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[at..])
            .map_err(|e| format!("LZ4 block at offset {pos}: {e}"))?;
        out.truncate(at + n);
        pos = start + size;
    }
    if out.is_empty() {
        return Err("LZ4 legacy stream holds no data".into());
    }
    Ok((out, pos))
}

/// Runs `tool args` with `data` on stdin and returns its stdout. Input trailing the
/// compressed stream makes some tools exit non-zero after writing everything, so
/// a non-empty output is returned whatever the status; callers validate it.
pub(crate) fn run_filter(
    tool: &str,
    args: &[&str],
    package: &str,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool} (install {package}): {e}"))?;
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let mut stdout = child.stdout.take();
    let (out, err) = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            if let Some(mut w) = stdin.take() {
                // A tool that stops reading early (trailing data) closes the pipe.
                let _ = w.write_all(data);
            }
        });
        let err_reader = s.spawn(move || {
            let mut e = Vec::new();
            if let Some(mut r) = stderr.take() {
                let _ = r.read_to_end(&mut e);
            }
            e
        });
        let mut out = Vec::new();
        if let Some(mut r) = stdout.take() {
            let _ = r.read_to_end(&mut out);
        }
        let _ = writer.join();
        let err = err_reader.join().unwrap_or_default();
        (out, err)
    });
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {tool}: {e}"))?;
    if out.is_empty() {
        return Err(format!(
            "{tool} {}: {status}: {}",
            args.join(" "),
            String::from_utf8_lossy(&err).trim()
        ));
    }
    Ok(out)
}

fn check_elf64(data: &[u8]) -> Result<(), String> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => Ok(()),
        Ok(kind) => Err(format!("decompressed data is {kind:?}, not a 64-bit ELF")),
        Err(e) => Err(format!("decompressed data is not an ELF file: {e}")),
    }
}

fn parse_elf64(data: &[u8]) -> Result<ElfFile64<'_, Endianness>, String> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => {}
        Ok(kind) => return Err(format!("{kind:?}, not a 64-bit ELF file")),
        Err(_) => return Err("not an ELF file".into()),
    }
    ElfFile64::parse(data).map_err(|e| format!("malformed ELF file: {e}"))
}

/// Whether the ELF kernel carries the PVH entry point note.
pub(crate) fn has_pvh_note(elf: &[u8]) -> Result<bool, String> {
    let file = parse_elf64(elf)?;
    let endian = file.endian();
    for ph in file.elf_program_headers() {
        let Some(mut notes) = ph.notes(endian, elf).map_err(|e| e.to_string())? else {
            continue;
        };
        while let Some(note) = notes.next().map_err(|e| e.to_string())? {
            if note.name() == b"Xen" && note.n_type(endian).0 == XEN_ELFNOTE_PHYS32_ENTRY {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Whether a 64-bit ELF executable asks for an interpreter (`PT_INTERP`), i.e. is
/// dynamically linked. Errors if `data` is not a 64-bit ELF executable.
pub(crate) fn elf_interpreter(data: &[u8]) -> Result<bool, String> {
    let file = parse_elf64(data)?;
    let endian = file.endian();
    let header = file.elf_header();
    let e_type = header.e_type(endian);
    if e_type != object::elf::ET_EXEC && e_type != object::elf::ET_DYN {
        return Err(format!("ELF type {e_type} is not an executable"));
    }
    Ok(file
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic data that compresses but not trivially.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        let words = [
            &b"virtio "[..],
            b"vsock ",
            b"provium ",
            b"kernel\n",
            b"\0\0\0\0",
        ];
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x % 3 == 0 {
                out.push((x >> 8) as u8);
            } else {
                out.extend_from_slice(words[(x as usize >> 4) % words.len()]);
            }
        }
        out.truncate(len);
        out
    }

    /// What `lz4 -l` writes: magic, then (size, block) pairs of 8 MiB input chunks.
    fn lz4_legacy_encode(data: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn lz4_legacy_multi_block_with_size_trailer() {
        let data = sample(20 << 20); // three blocks, the last one partial
        let mut stream = lz4_legacy_encode(&data);
        let stream_len = stream.len();
        stream.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let (out, used) = lz4_legacy_decode(&stream).expect("decode");
        assert_eq!(used, stream_len);
        assert!(out == data, "round trip differs");
    }

    #[test]
    fn lz4_legacy_concatenated_streams_and_garbage() {
        let a = sample(1000);
        let b = sample(3 << 20);
        let mut stream = lz4_legacy_encode(&a);
        stream.extend_from_slice(&lz4_legacy_encode(&b));
        let end = stream.len();
        stream.extend_from_slice(&[0xff; 3]); // too short for a block size
        let (out, used) = lz4_legacy_decode(&stream).expect("decode");
        assert_eq!(used, end);
        assert_eq!(out.len(), a.len() + b.len());
        assert!(out[..a.len()] == a[..] && out[a.len()..] == b[..]);
    }

    #[test]
    fn lz4_legacy_rejects_bad_input() {
        assert!(lz4_legacy_decode(b"not lz4").is_err());
        assert!(lz4_legacy_decode(&LZ4_LEGACY_MAGIC).is_err());
        // A block whose content is not valid LZ4.
        let mut bad = LZ4_LEGACY_MAGIC.to_vec();
        bad.extend_from_slice(&8u32.to_le_bytes());
        bad.extend_from_slice(&[0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(lz4_legacy_decode(&bad).is_err());
    }

    /// A fake bzImage whose setup header points at `payload`.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let pm_start = (usize::from(setup_sects) + 1) * 512;
        let offset = 0x3c0usize;
        let mut img = vec![0u8; pm_start + offset];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&(offset as u32).to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailing decompressor code and data");
        img
    }

    #[test]
    fn bzimage_payload_from_setup_header() {
        let img = fake_bzimage(b"PAYLOAD");
        assert_eq!(bzimage_payload(&img), Some(&b"PAYLOAD"[..]));
        assert_eq!(bzimage_payload(b"short"), None);
        let mut old = img.clone();
        old[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        assert_eq!(bzimage_payload(&old), None);
        let mut cut = img;
        cut[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(bzimage_payload(&cut), None);
    }

    #[test]
    fn extract_from_fake_bzimage() {
        // Any 64-bit ELF will do as the "kernel": the test binary itself.
        let elf = std::fs::read(std::env::current_exe().expect("exe")).expect("read exe");
        let mut payload = lz4_legacy_encode(&elf);
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let v = extract(&fake_bzimage(&payload)).expect("extract");
        assert_eq!(v.compression, Compression::Lz4Legacy);
        assert!(v.elf == elf);
        // Without a setup header the magic scan finds it.
        let mut raw = b"no header here".to_vec();
        raw.extend_from_slice(&payload);
        let v = extract(&raw).expect("extract by scan");
        assert!(v.elf == elf);
        // A wrong size trailer is caught when the payload's end is known.
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&1u32.to_le_bytes());
        let err = decompress_payload(Compression::Lz4Legacy, &payload, true).expect_err("size");
        assert!(err.contains("the image says 1"), "{err}");
        assert!(extract(b"nothing to see").is_err());
    }

    #[test]
    fn gzip_fallback_through_the_host_tool() {
        let elf = std::fs::read(std::env::current_exe().expect("exe")).expect("read exe");
        let part = &elf[..elf.len().min(1 << 20)];
        let Ok(gz) = run_filter("gzip", &["-c1"], "gzip", part) else {
            return; // no gzip on this host
        };
        let out = run_filter("gzip", &["-dc"], "gzip", &gz).expect("gunzip");
        assert!(out == part);
        // The magic scan finds the gzip data behind other bytes and decodes it
        // (the ELF header check passes on the truncated copy).
        let mut img = b"junk".to_vec();
        img.extend_from_slice(&gz);
        assert!(extract(&img).is_ok());
    }

    #[test]
    fn elf_checks() {
        let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read exe");
        // The test binary is a dynamically linked (or static-pie) executable.
        assert!(elf_interpreter(&exe).is_ok());
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert_eq!(has_pvh_note(&exe), Ok(false));
        if let Ok(bb) = std::fs::read("/bin/busybox") {
            assert_eq!(elf_interpreter(&bb), Ok(false), "busybox-static is static");
        }
    }
}
