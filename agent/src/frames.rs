//! Reading frames in place.
//!
//! Frames are read into one buffer owned by the connection and handed out as
//! slices of it, so upload bytes go from the socket to their file with no copy
//! in between. Measured reason for not using `BufReader` plus a body `Vec`
//! per frame: under TCG user-space copies and large allocations (mmap'd by
//! musl) were what bulk uploads paid for (15 MB/s before, >100 MB/s after).
//! Each read asks for as much as fits, so a small request and its header
//! arrive in one system call.

use std::io::{self, Read};

use provium_protocol::{frame::body_len, FrameError, FRAME_HEADER_LEN};

/// Initial buffer size: room for a few bulk chunks.
const INITIAL: usize = 4 * (provium_protocol::CHUNK_LEN + 64);

/// A frame reader over a byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn available(&self) -> usize {
        self.end - self.start
    }

    /// Makes sure `buf[start..start + want]` is buffered, reading more as
    /// needed; returns false at end of stream (with fewer bytes buffered).
    fn fill(&mut self, want: usize) -> io::Result<bool> {
        if self.available() >= want {
            return Ok(true);
        }
        if self.start + want > self.buf.len() {
            // Not enough room after `start`: move the partial frame to the
            // front (rare: the buffer holds several frames), growing the
            // buffer if one frame is larger than all of it.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if want > self.buf.len() {
                // Exactly: `resize` alone may double the capacity, up to
                // twice the largest frame.
                let size = want.max(INITIAL);
                self.buf.reserve_exact(size - self.buf.len());
                self.buf.resize(size, 0);
            }
        }
        while self.available() < want {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether the stream starts with `magic` (consumed if so). Bytes are
    /// only looked at, never lost: a non-matching start is still read as
    /// frames afterwards.
    pub fn starts_with(&mut self, magic: &[u8]) -> io::Result<bool> {
        // Byte by byte, so a short frame that differs early is never waited
        // on for bytes that will not come.
        for (i, &b) in magic.iter().enumerate() {
            if !self.fill(i + 1)? || self.buf[self.start + i] != b {
                return Ok(false);
            }
        }
        self.start += magic.len();
        Ok(true)
    }

    /// The next frame body, or `None` at a clean end of stream. The slice is
    /// valid until the next call.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if !self.fill(FRAME_HEADER_LEN)? {
            return match self.available() {
                0 => Ok(None),
                got => Err(FrameError::Truncated {
                    got,
                    want: FRAME_HEADER_LEN,
                }),
            };
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.buf[self.start..self.start + FRAME_HEADER_LEN]);
        let len = body_len(header)?;
        if !self.fill(FRAME_HEADER_LEN + len)? {
            return Err(FrameError::Truncated {
                got: self.available() - FRAME_HEADER_LEN,
                want: len,
            });
        }
        let body = self.start + FRAME_HEADER_LEN;
        self.start = body + len;
        if self.start == self.end {
            // Empty: the next read can use the whole buffer.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[body..body + len]))
    }
}

/// Buffered bytes first, then the stream (for the raw echo after the magic).
impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.available() > 0 {
            let n = self.available().min(out.len());
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
        self.inner.read(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provium_protocol::{encode, AgentMsg, RequestId};

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream(sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            out.extend(
                encode(&AgentMsg::Data {
                    id: RequestId(i as u64),
                    channel: 0,
                    chunk: vec![i as u8; n].into(),
                })
                .unwrap(),
            );
        }
        out
    }

    #[test]
    fn frames_of_every_size_through_every_read_size() {
        let sizes = [
            0,
            1,
            100,
            provium_protocol::CHUNK_LEN,
            7,
            3 * provium_protocol::CHUNK_LEN,
            5,
        ];
        let data = stream(&sizes);
        for step in [1, 3, 4, 5, 1000, 65536, usize::MAX] {
            let mut r = FrameReader::new(Trickle { data: &data, step });
            for (i, &n) in sizes.iter().enumerate() {
                let body = r.next_frame().unwrap().unwrap().to_vec();
                match provium_protocol::decode::<AgentMsg>(&body).unwrap() {
                    AgentMsg::Data { id, chunk, .. } => {
                        assert_eq!(id, RequestId(i as u64));
                        assert_eq!(chunk.len(), n);
                        assert!(chunk.iter().all(|&b| b == i as u8));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(r.next_frame().unwrap().is_none(), "step {step}");
        }
    }

    #[test]
    fn truncation_and_oversize_are_errors() {
        let data = stream(&[10]);
        let mut r = FrameReader::new(&data[..data.len() - 1]);
        assert!(matches!(r.next_frame(), Err(FrameError::Truncated { .. })));
        let mut r = FrameReader::new(&data[..2]);
        assert!(matches!(r.next_frame(), Err(FrameError::Truncated { .. })));
        let huge = u32::MAX.to_le_bytes();
        let mut r = FrameReader::new(&huge[..]);
        assert!(matches!(r.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    /// Found by the fuzz harness (`tests/fuzz.rs`): growing the buffer
    /// with `resize` alone doubled it, past one maximal frame.
    #[test]
    fn fuzz_regression_buffer_grows_to_one_frame_at_most() {
        let big = provium_protocol::CHUNK_LEN * 5;
        let mut data = (big as u32).to_le_bytes().to_vec();
        data.resize(FRAME_HEADER_LEN + big, 7);
        data.extend((provium_protocol::MAX_FRAME_LEN as u32).to_le_bytes());
        let mut r = FrameReader::new(&data[..]);
        assert_eq!(r.next_frame().unwrap().unwrap().len(), big);
        assert!(matches!(r.next_frame(), Err(FrameError::Truncated { .. })));
        assert_eq!(
            r.buf.capacity(),
            FRAME_HEADER_LEN + provium_protocol::MAX_FRAME_LEN
        );
    }

    #[test]
    fn magic_is_consumed_only_when_it_matches() {
        let mut data = b"PRVECHO\nrest".to_vec();
        let mut r = FrameReader::new(&data[..]);
        assert!(r.starts_with(b"PRVECHO\n").unwrap());
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "rest");

        data = stream(&[3]);
        let mut r = FrameReader::new(&data[..]);
        assert!(!r.starts_with(b"PRVECHO\n").unwrap());
        assert!(r.next_frame().unwrap().is_some());

        // A frame shorter than the magic, then nothing: answered at once.
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, &[2, 0, 0, 0, 0, 1]).unwrap();
        let mut r = FrameReader::new(b);
        assert!(!r.starts_with(b"PRVECHO\n").unwrap());
        assert_eq!(r.next_frame().unwrap().unwrap(), &[0, 1]);
    }
}
