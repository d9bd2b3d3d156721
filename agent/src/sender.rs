//! The writing half of a connection, shared by every thread serving it.
//!
//! Each frame is encoded first and then written with a single `write_all`
//! under a mutex, so frames from different threads never interleave. Once the
//! connection ends the writer is dropped and later sends fail quietly, so a
//! slow operation finishing after its connection closed cannot write into a
//! new session on the same stream (virtio-serial reuses one port).
//!
//! A session restarted in place (the host said hello again on a stream we
//! still consider open) gets a new *epoch* ([`Sender::renew`]): handles of
//! the older epoch are refused, so stale replies never reach the new host.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

// Everything is encoded through `encode_frame` (one postcard output type:
// a second one would duplicate the serialisation code in the binary).
use provium_protocol::{
    wire, AgentMsg, Failure, FrameError, Reply, RequestId, FRAME_HEADER_LEN, MAX_FRAME_LEN,
};

use crate::error::internal;

type Writer = Box<dyn Write + Send>;

/// A cloneable handle on the writing half of one connection.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Mutex<Shared>>,
    epoch: u64,
}

struct Shared {
    writer: Option<Writer>,
    epoch: u64,
    /// The writer's descriptor (a duplicate), for [`Sender::data_from_pipe`];
    /// dropped with the writer.
    fd: Option<OwnedFd>,
}

impl Sender {
    /// Wraps a stream's writing half.
    pub fn new<W: Write + Send + 'static>(writer: W) -> Sender {
        Sender {
            inner: Arc::new(Mutex::new(Shared {
                writer: Some(Box::new(writer)),
                epoch: 0,
                fd: None,
            })),
            epoch: 0,
        }
    }

    /// Wraps a stream's writing half that has a descriptor, so that bulk
    /// data can also be spliced into it ([`Sender::data_from_pipe`]).
    pub fn with_fd<W: Write + AsFd + Send + 'static>(writer: W) -> Sender {
        let fd = writer.as_fd().try_clone_to_owned().ok();
        let sender = Sender::new(writer);
        sender.lock().fd = fd;
        sender
    }

    /// Whether [`Sender::data_from_pipe`] can be used.
    pub fn can_splice(&self) -> bool {
        let shared = self.lock();
        shared.fd.is_some() && shared.writer.is_some() && shared.epoch == self.epoch
    }

    /// Sends one `Data` frame of the `len` bytes waiting in `pipe` (its
    /// read end): the header is written, then the bytes are spliced from
    /// the pipe into the stream, so they are never copied through user
    /// space (a file spliced into the pipe is page references: a
    /// virtio-serial port then hands the pages to QEMU as they are).
    pub fn data_from_pipe(
        &self,
        id: RequestId,
        channel: u8,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> io::Result<()> {
        let head = data_head(id, channel, len)?;
        let mut shared = self.lock();
        if shared.epoch != self.epoch {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "session restarted",
            ));
        }
        let Shared { writer, fd, .. } = &mut *shared;
        let (Some(w), Some(out)) = (writer.as_mut(), fd.as_ref()) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            ));
        };
        let result = w.write_all(&head).and_then(|()| w.flush()).and_then(|()| {
            let mut left = len;
            while left > 0 {
                match rustix::pipe::splice(
                    pipe,
                    None,
                    out,
                    None,
                    left,
                    rustix::pipe::SpliceFlags::MOVE,
                ) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => left -= n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        if result.is_err() {
            // A partly written frame leaves the stream unusable.
            shared.writer = None;
            shared.fd = None;
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new epoch on the same stream: the returned handle writes,
    /// every handle of earlier epochs is refused from now on.
    pub fn renew(&self) -> Sender {
        let mut shared = self.lock();
        shared.epoch += 1;
        Sender {
            inner: Arc::clone(&self.inner),
            epoch: shared.epoch,
        }
    }

    /// Writes raw bytes (one complete frame, or echo data) in one go.
    ///
    /// A write error closes the writer: a partly written frame leaves the
    /// stream unusable.
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_with(|w| w.write_all(bytes))
    }

    /// Runs `write` on the writer of this epoch under the lock, then
    /// flushes; a failure closes the writer (a partly written frame leaves
    /// the stream unusable).
    fn write_with(&self, write: impl FnOnce(&mut Writer) -> io::Result<()>) -> io::Result<()> {
        let mut shared = self.lock();
        if shared.epoch != self.epoch {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "session restarted",
            ));
        }
        let Some(writer) = shared.writer.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            ));
        };
        let result = write(writer).and_then(|()| writer.flush());
        if result.is_err() {
            shared.writer = None;
            shared.fd = None;
        }
        result
    }

    /// Encodes and sends one message.
    pub fn send(&self, msg: &AgentMsg) -> io::Result<()> {
        let frame = encode_frame(msg, 256).map_err(frame_to_io)?;
        self.send_raw(&frame)
    }

    /// Sends the final reply of a call. A reply too large for one frame is
    /// replaced by an internal failure, so the call still gets its one reply.
    pub fn reply(&self, id: RequestId, result: Result<Reply, Failure>) -> io::Result<()> {
        let capacity = size_hint(&result);
        let frame = match encode_frame(&AgentMsg::Reply { id, result }, capacity) {
            Ok(frame) => frame,
            Err(e) => {
                log!("{id}: reply cannot be encoded: {e}");
                let result = Err(internal(format!("reply cannot be sent: {e}")));
                encode_frame(&AgentMsg::Reply { id, result }, 256).map_err(frame_to_io)?
            }
        };
        self.send_raw(&frame)
    }

    /// Sends one `Data` frame without copying `chunk`: its header is built
    /// by hand in postcard's encoding of [`AgentMsg::Data`] and written
    /// together with the chunk in one vectored write (user-space copies are
    /// what bulk transfers pay for under TCG).
    pub fn data(&self, id: RequestId, channel: u8, chunk: &[u8]) -> io::Result<()> {
        self.send_parts(&data_head(id, channel, chunk.len())?, chunk)
    }

    /// Sends `Reply { id, result: Ok(Reply::Bytes(bytes)) }` without copying
    /// `bytes` into an owned message first (file reads answer this way).
    pub fn reply_bytes(&self, id: RequestId, bytes: &[u8]) -> io::Result<()> {
        let mut head = frame_start();
        head.push(wire::AGENT_REPLY);
        push_varint(&mut head, id.0);
        head.push(wire::RESULT_OK);
        head.push(wire::REPLY_BYTES);
        push_varint(&mut head, bytes.len() as u64);
        finish_head(&mut head, bytes.len())?;
        self.send_parts(&head, bytes)
    }

    /// Sends a reply whose `result` (a `Result<Reply, Failure>`) is already
    /// encoded, e.g. relayed from a worker under another request id.
    pub fn reply_encoded(&self, id: RequestId, result: &[u8]) -> io::Result<()> {
        let mut head = frame_start();
        head.push(wire::AGENT_REPLY);
        push_varint(&mut head, id.0);
        finish_head(&mut head, result.len())?;
        self.send_parts(&head, result)
    }

    /// Writes two buffers as one frame, with as few system calls as the
    /// writer allows.
    fn send_parts(&self, head: &[u8], tail: &[u8]) -> io::Result<()> {
        self.write_with(|w| write_all_vectored(w, head, tail))
    }

    /// Drops the writer (for every epoch): later sends fail with
    /// `NotConnected`.
    pub fn close(&self) {
        let mut shared = self.lock();
        shared.writer = None;
        shared.fd = None;
    }

    /// Whether this handle can still write.
    pub fn is_open(&self) -> bool {
        let shared = self.lock();
        shared.writer.is_some() && shared.epoch == self.epoch
    }
}

/// A postcard output appending to a `Vec` reserved for the whole reply, so
/// a large reply (a batch carrying megabytes) is not grown through a chain
/// of reallocations, each copying what was already encoded (above 128 KiB
/// musl serves them with mmap/mremap). Per-entry encoding cost is the
/// same as the protocol's `encode` (measured with callgrind).
struct FrameOutput(Vec<u8>);

impl postcard::ser_flavors::Flavor for FrameOutput {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: serde::Serialize>(out: Vec<u8>, value: &T) -> Result<Vec<u8>, Failure> {
    postcard::serialize_with_flavor(value, FrameOutput(out))
        .map_err(|e| internal(format!("cannot encode: {e}")))
}

/// Writes the length header of a frame built in `frame` (which starts with
/// [`FRAME_HEADER_LEN`] placeholder bytes).
pub fn finish_frame(frame: &mut [u8]) -> io::Result<()> {
    let len = frame.len() - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes"),
        ));
    }
    frame[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encodes one complete frame (header included) into a buffer of about
/// `capacity` bytes (it grows if needed).
pub fn encode_frame(msg: &AgentMsg, capacity: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(capacity.clamp(64, MAX_FRAME_LEN + FRAME_HEADER_LEN));
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    provium_protocol::frame::seal(postcard::serialize_with_flavor(msg, FrameOutput(buf))?)
}

/// About how large a reply's frame is, so it is encoded without a chain of
/// reallocations (entries of a batch add up; small ones count little).
fn size_hint(result: &Result<Reply, Failure>) -> usize {
    let bufs = |bufs: &[serde_bytes::ByteBuf]| bufs.iter().map(|b| b.len() + 4).sum::<usize>();
    let hint = match result {
        Ok(Reply::Bytes(b)) => b.len() + 32,
        Ok(Reply::Run(o)) => o.stdout.len() + o.stderr.len() + 64,
        Ok(Reply::Batch(results)) => results.iter().map(size_hint).sum::<usize>() + 32,
        Ok(Reply::Entries(e)) => e.iter().map(|d| d.name.len() + 4).sum::<usize>() + 32,
        Ok(Reply::Syscall { bufs: b, .. }) => bufs(b) + 32,
        Ok(Reply::Ioctl { data, bufs: b, .. }) => data.len() + bufs(b) + 32,
        Ok(Reply::Stat(_)) => 80,
        Ok(_) => 16,
        Err(f) => f.message.len() + 32,
    };
    hint.min(MAX_FRAME_LEN)
}

/// A frame under construction: room for its length header.
fn frame_start() -> Vec<u8> {
    let mut head = Vec::with_capacity(FRAME_HEADER_LEN + 24);
    head.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    head
}

/// Writes the length header of a frame whose body is the rest of `head`
/// followed by `tail_len` more bytes.
fn finish_head(head: &mut [u8], tail_len: usize) -> io::Result<()> {
    let body_len = u32::try_from(head.len() - FRAME_HEADER_LEN + tail_len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    head[..FRAME_HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    Ok(())
}

/// The frame header and message prefix of `AgentMsg::Data { id, channel,
/// chunk }` for a chunk of `len` bytes; the chunk itself follows.
pub fn data_head(id: RequestId, channel: u8, len: usize) -> io::Result<Vec<u8>> {
    let mut head = frame_start();
    head.push(wire::AGENT_DATA);
    push_varint(&mut head, id.0);
    head.push(channel);
    push_varint(&mut head, len as u64);
    finish_head(&mut head, len)?;
    Ok(head)
}

/// `write_all` for two buffers through `write_vectored`.
fn write_all_vectored(w: &mut dyn Write, head: &[u8], tail: &[u8]) -> io::Result<()> {
    let mut bufs = [io::IoSlice::new(head), io::IoSlice::new(tail)];
    let mut slices: &mut [io::IoSlice<'_>] = &mut bufs;
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends a LEB128 varint (postcard's integer encoding).
pub fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn frame_to_io(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// Tells the host the stream's source is open: an empty `Data` frame, sent
/// before any bytes, so that opening a missing file fails at once with the
/// OS error while a quiet source still has a stream.
pub fn acknowledge_stream(sender: &Sender, req: RequestId) -> Result<(), Failure> {
    sender
        .data(req, provium_protocol::CH_BODY, &[])
        .map_err(|e| internal(format!("connection lost: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use provium_protocol::encode;
    use serde_bytes::ByteBuf;

    #[test]
    fn hand_built_data_frame_matches_postcard() {
        for (id, channel, len) in [
            (0u64, 0u8, 0usize),
            (7, 1, 5),
            (300, 2, 200),
            (u64::MAX, 255, 70_000),
        ] {
            let chunk: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = data_head(RequestId(id), channel, chunk.len()).unwrap();
            ours.extend_from_slice(&chunk);
            let theirs = encode(&AgentMsg::Data {
                id: RequestId(id),
                channel,
                chunk: ByteBuf::from(chunk),
            })
            .unwrap();
            assert_eq!(ours, theirs, "id {id} channel {channel} len {len}");
        }
    }

    /// Collects what a sender writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hand_built_replies_match_postcard() {
        for (id, len) in [(1u64, 0usize), (300, 5), (u64::MAX, 200_000)] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 5) as u8).collect();
            let sink = Sink::default();
            let s = Sender::new(sink.clone());
            s.reply_bytes(RequestId(id), &bytes).unwrap();
            let theirs = encode(&AgentMsg::Reply {
                id: RequestId(id),
                result: Ok(Reply::Bytes(ByteBuf::from(bytes.clone()))),
            })
            .unwrap();
            assert_eq!(*sink.0.lock().unwrap(), theirs);

            let result: Result<Reply, Failure> = Err(Failure::os(2, "nope"));
            let encoded = postcard::to_allocvec(&result).unwrap();
            let sink = Sink::default();
            let s = Sender::new(sink.clone());
            s.reply_encoded(RequestId(id), &encoded).unwrap();
            let theirs = encode(&AgentMsg::Reply {
                id: RequestId(id),
                result,
            })
            .unwrap();
            assert_eq!(*sink.0.lock().unwrap(), theirs);
        }
    }

    #[test]
    fn renewed_sender_refuses_the_old_epoch() {
        let s = Sender::new(Vec::new());
        let old = s.clone();
        let new = s.renew();
        assert!(old.data(RequestId(1), 0, b"x").is_err());
        assert!(!s.is_open());
        assert!(new.data(RequestId(1), 0, b"x").is_ok());
        new.close();
        assert!(new.data(RequestId(1), 0, b"x").is_err());
    }

    #[test]
    fn closed_sender_refuses() {
        let s = Sender::new(Vec::new());
        assert!(s.is_open());
        s.close();
        assert!(!s.is_open());
        assert!(s.data(RequestId(1), 0, b"x").is_err());
    }
}
