//! Length-prefixed postcard frames over any byte stream.
//!
//! A frame is a 4-byte little-endian body length followed by the postcard body.
//! The length is checked against [`MAX_FRAME_LEN`] before anything is allocated,
//! so a hostile or corrupt peer can make us close the connection but never make
//! us allocate what it claims.

use std::io::{self, Read};

use serde::{de::DeserializeOwned, Serialize};

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest frame body either side accepts or sends (bulk data travels in
/// [`crate::CHUNK_LEN`] pieces, far below this).
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Initial capacity of an encoded frame.
const ENCODE_CAPACITY: usize = 256;

/// Errors of the framing layer. Every one of them ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// frame of {len} bytes exceeds the limit of {max} bytes
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Body length the header claims, in bytes.
        len: usize,
        /// The limit, [`MAX_FRAME_LEN`] bytes.
        max: usize,
    },
    /// connection closed in the middle of a frame ({got} of {want} bytes)
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes of the header or body that arrived before the end of stream.
        got: usize,
        /// Bytes the header or body needed.
        want: usize,
    },
    /// malformed frame body: {0}
    #[error("malformed frame body: {0}")]
    Malformed(#[from] postcard::Error),
    /// I/O error: {0}
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Checks a body length read from a header; returns it as a `usize`.
pub fn body_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Serialises `msg` into one complete frame (header included).
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, FrameError> {
    // Sized for typical control messages, so they encode without a chain of
    // reallocations (postcard pushes byte by byte); bulk data grows it once.
    let mut buf = Vec::with_capacity(ENCODE_CAPACITY);
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    seal(postcard::to_extend(msg, buf)?)
}

/// Finishes a frame whose body was written after [`FRAME_HEADER_LEN`]
/// placeholder bytes: checks the body's size and fills in the header.
pub fn seal(mut frame: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let len = frame.len().saturating_sub(FRAME_HEADER_LEN);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    frame[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// Deserialises a frame body (without its header).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(body)?)
}

/// Reads one frame body from a blocking stream.
///
/// Returns `Ok(None)` on a clean end of stream at a frame boundary; an end of
/// stream inside a frame is [`FrameError::Truncated`].
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            got,
            want: FRAME_HEADER_LEN,
        });
    }
    let len = body_len(header)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { got, want: len });
    }
    Ok(Some(body))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentMsg, HostMsg, Op, RequestId, PROTOCOL_VERSION};

    #[test]
    fn round_trip() {
        let msg = HostMsg::Call {
            id: RequestId(7),
            op: Op::Stat {
                path: b"/etc/hostname".to_vec(),
                follow: true,
            },
        };
        let frame = encode(&msg).unwrap();
        let mut cursor = &frame[..];
        let body = read_frame(&mut cursor).unwrap().unwrap();
        let back: HostMsg = decode(&body).unwrap();
        assert_eq!(back, msg);
        assert!(read_frame(&mut cursor).unwrap().is_none());
    }

    #[test]
    fn many_frames_back_to_back() {
        let mut stream = Vec::new();
        for i in 0..100u64 {
            stream.extend(
                encode(&AgentMsg::Data {
                    id: RequestId(i),
                    channel: 0,
                    chunk: vec![i as u8; i as usize].into(),
                })
                .unwrap(),
            );
        }
        let mut cursor = &stream[..];
        for i in 0..100u64 {
            let body = read_frame(&mut cursor).unwrap().unwrap();
            match decode::<AgentMsg>(&body).unwrap() {
                AgentMsg::Data { id, chunk, .. } => {
                    assert_eq!(id, RequestId(i));
                    assert_eq!(chunk.len(), i as usize);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_header_and_body() {
        let frame = encode(&HostMsg::Call {
            id: RequestId(1),
            op: Op::Ping,
        })
        .unwrap();
        let mut short_header = &frame[..2];
        assert!(matches!(
            read_frame(&mut short_header),
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
        let mut short_body = &frame[..frame.len() - 1];
        assert!(matches!(
            read_frame(&mut short_body),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        // Claims 4 GiB: must fail on the header alone.
        let mut claim = &u32::MAX.to_le_bytes()[..];
        match read_frame(&mut claim) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let big = AgentMsg::Data {
            id: RequestId(1),
            channel: 0,
            chunk: vec![0u8; MAX_FRAME_LEN + 1].into(),
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn malformed_body_is_an_error() {
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend([0xff, 0xff, 0xff]);
        let mut cursor = &frame[..];
        let body = read_frame(&mut cursor).unwrap().unwrap();
        assert!(matches!(
            decode::<HostMsg>(&body),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn hello_is_stable_across_versions() {
        // A future version must still be able to read our hello's version.
        let hello = encode(&AgentMsg::Hello(crate::AgentHello {
            version: PROTOCOL_VERSION + 41,
            agent_version: "9.9.9".into(),
            kernel: "6.1".into(),
        }))
        .unwrap();
        // variant 0, then the version varint.
        assert_eq!(hello[4], 0);
        let back: AgentMsg = decode(&hello[4..]).unwrap();
        let AgentMsg::Hello(h) = back else {
            panic!("not a hello")
        };
        assert_eq!(h.version, PROTOCOL_VERSION + 41);
        assert_eq!(crate::check_version(h.version), Err(h.version));
        assert_eq!(crate::check_version(PROTOCOL_VERSION), Ok(()));
    }
}
