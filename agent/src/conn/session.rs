//! The call loop of one connection, after the hello exchange.

use std::io::Read;
use std::sync::Arc;

use provium_protocol::{decode, AgentMsg, HostMsg, Op, Reply, RequestId, PROTOCOL_VERSION};

use super::{check_host_version, hello, ConnEnd, ConnError};
use crate::error::{internal, OpResult};
use crate::frames::FrameReader;
use crate::handles;
use crate::inflight::InFlight;
use crate::ops::dispatch::{self, How, Special};
use crate::ops::file::{self, FileHandle};
use crate::ops::{self, batch, process, upload::Uploads};
use crate::sender::Sender;
use crate::trigger::Trigger;
use crate::worker;

/// Per-connection state owned by the reader thread.
pub(super) struct Session {
    /// See [`ServeOptions::trusted`].
    trusted: bool,
    sender: Sender,
    uploads: Uploads,
    /// Reads waiting for the host's go (see [`ops::read::Gates`]).
    gates: ops::read::Gates,
    inflight: InFlight,
    /// Reused for inline file reads (large buffers are mmap'd by musl).
    read_buf: Vec<u8>,
}

impl Session {
    /// A session on `sender`, after the hello exchange.
    pub(super) fn new(trusted: bool, sender: Sender) -> Session {
        Session {
            trusted,
            sender,
            uploads: Uploads::default(),
            gates: ops::read::Gates::default(),
            inflight: InFlight::default(),
            read_buf: Vec::new(),
        }
    }

    /// Serves calls until the connection ends; then cancels what is still
    /// in flight (no stream outlives its connection).
    pub(super) fn run<R: Read>(
        mut self,
        reader: &mut FrameReader<R>,
    ) -> Result<ConnEnd, ConnError> {
        let end = self.serve(reader);
        self.inflight.cancel_all();
        end
    }

    /// The call loop.
    fn serve<R: Read>(&mut self, reader: &mut FrameReader<R>) -> Result<ConnEnd, ConnError> {
        loop {
            let Some(frame) = reader.next_frame()? else {
                return Ok(ConnEnd::Closed);
            };
            if let Some(view) = HostMsg::data_view(frame) {
                let view = view?;
                match self.inflight.relay(view.id) {
                    Some(relay) => relay.peer.data(relay.inner, view.chunk, view.last),
                    None if self.gates.open(view.id) => {}
                    None => self
                        .uploads
                        .data(&self.sender, view.id, view.chunk, view.last),
                }
                continue;
            }
            if let Some((id, ops)) = batch::parse_call(frame) {
                // Decoded entry by entry on the batch's thread.
                let ops = ops.to_vec();
                self.spawn_raw(id, "batch", move |s| batch::run(s, id, &ops));
                continue;
            }
            let msg: HostMsg = decode(frame)?;
            if let Some(end) = self.handle(msg, frame)? {
                return Ok(end);
            }
        }
    }

    /// Handles one host frame (`msg` decoded from `frame`); `Some` ends
    /// the connection.
    fn handle(&mut self, msg: HostMsg, frame: &[u8]) -> Result<Option<ConnEnd>, ConnError> {
        match msg {
            HostMsg::Call { id, op } => return self.call(id, op, frame),
            HostMsg::Data { id, chunk, last } => self.uploads.data(&self.sender, id, &chunk, last),
            HostMsg::Cancel { id } => {
                // A run is both a cancellable call and, with streamed stdin,
                // an upload: both end.
                if !self.inflight.cancel(id) || self.uploads.contains(id) {
                    self.uploads.cancel(&self.sender, id);
                }
                // A read waiting for the go after its size hint.
                self.gates.open(id);
            }
            HostMsg::Hello { version, token } => {
                // A host that reconnected to a stream we still consider open
                // (a virtio-serial port whose host side closed and reopened
                // before we saw the end of file) starts over: answer with a
                // fresh hello. Uploads of the old session are dropped and
                // calls still running in it never reply (new sender epoch).
                debug!("hello in mid-session: starting a new session");
                self.uploads = Uploads::default();
                self.inflight.cancel_all();
                self.inflight = InFlight::default();
                self.sender = self.sender.renew();
                if let Some(end) = check_host_version(&self.sender, version)? {
                    return Ok(Some(end));
                }
                if self.trusted {
                    crate::auth::learn(token);
                }
                self.sender
                    .send(&AgentMsg::Hello(hello()))
                    .map_err(ConnError::Write)?;
            }
            HostMsg::HelloRejected { version, reason } => {
                log!(
                    "the host (protocol version {version}) rejected this agent \
                     (protocol version {PROTOCOL_VERSION}): {reason}"
                );
                return Ok(Some(ConnEnd::Rejected));
            }
        }
        Ok(None)
    }

    /// Serves call `id` (`op`, decoded from `frame`).
    fn call(&mut self, id: RequestId, op: Op, frame: &[u8]) -> Result<Option<ConnEnd>, ConnError> {
        dispatch::run(
            op,
            &mut ConnCall {
                session: self,
                id,
                frame,
            },
        )
    }

    /// Serves an op that the connection serves its own way (see
    /// [`Special`]).
    fn special(
        &mut self,
        id: RequestId,
        op: Special,
        frame: &[u8],
    ) -> Result<Option<ConnEnd>, ConnError> {
        let result = match op {
            Special::ListDir { path } => ops::fs::list_dir_to(&self.sender, id, &path),
            Special::WriteFile {
                path,
                attrs,
                data,
                more,
            } => match self.uploads.write_file(id, &path, attrs, &data, more) {
                Some(result) => result,
                None => return Ok(None),
            },
            Special::ReadFile { path } => {
                let gates = self.gates.clone();
                // Registered like a stream, so that a Cancel stops it.
                let Some(cancel) = self.cancellable(id)? else {
                    return Ok(None);
                };
                let inflight = self.inflight.clone();
                self.spawn(id, "read-file", move |s| {
                    let r = ops::read::read_file(s, id, &path, &gates, &cancel);
                    inflight.end_stream(id);
                    r
                });
                return Ok(None);
            }
            Special::Run(spec) => {
                // Registered like a stream, so that a Cancel kills it.
                let Some(cancel) = self.cancellable(id)? else {
                    return Ok(None);
                };
                let feed = spec.stdin_more.then(|| self.uploads.stdin(id));
                let inflight = self.inflight.clone();
                self.spawn(id, "run", move |s| {
                    let r = ops::run::run(s, id, spec, feed, &cancel);
                    inflight.end_stream(id);
                    r
                });
                return Ok(None);
            }
            Special::Poweroff => {
                self.reply(id, Ok(Reply::Unit))?;
                return Ok(Some(ConnEnd::Poweroff));
            }
            Special::FileRead { handle, len } => return self.file_read(id, handle, len),
            Special::FileWrite { handle, data } => {
                match handles::get::<FileHandle>(handle, "write") {
                    Ok(f) if f.may_block() => {
                        self.spawn(id, "file-write", move |_| file::write_to(&f, handle, &data));
                        return Ok(None);
                    }
                    Ok(f) => file::write_to(&f, handle, &data),
                    Err(e) => Err(e),
                }
            }
            Special::Close { handle } => match handles::remove(handle, "close") {
                Ok(removed) => match removed.downcast::<FileHandle>() {
                    Ok(f) => file::close(&f),
                    Err(other) => {
                        self.spawn(id, "close", move |_| ops::close_removed(other));
                        return Ok(None);
                    }
                },
                Err(e) => Err(e),
            },
            Special::Stream(source) => {
                let Some(cancel) = self.cancellable(id)? else {
                    return Ok(None);
                };
                let inflight = self.inflight.clone();
                self.spawn_raw(id, "stream", move |s| {
                    let mut parked = Vec::new();
                    let result = ops::stream::stream(s, id, source, &cancel, &mut parked);
                    inflight.end_stream(id);
                    if let Err(e) = s.reply(id, result) {
                        debug!("{id}: reply not sent: {e}");
                    }
                    drop(parked);
                });
                return Ok(None);
            }
            Special::ProcWait { handle, timeout_ms } => {
                self.spawn(id, "wait", move |s| {
                    process::wait(s, id, handle, timeout_ms)
                });
                return Ok(None);
            }
            Special::Batch => {
                // Batch frames are taken apart before decoding (see `serve`).
                match batch::parse_call(frame) {
                    Some((_, ops)) => {
                        let ops = ops.to_vec();
                        self.spawn_raw(id, "batch", move |s| batch::run(s, id, &ops));
                        return Ok(None);
                    }
                    None => Err(internal("batch: cannot find the op list")),
                }
            }
            Special::InWorker { worker: w, op } => {
                match worker::in_worker(&self.sender, id, w, &op, frame, &self.inflight) {
                    Ok(()) => return Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        self.reply(id, result)?;
        Ok(None)
    }

    /// `Op::FileRead`: inline into the connection's buffer for files that
    /// cannot block (the reply is written without another copy), on a
    /// pooled thread for the others.
    fn file_read(
        &mut self,
        id: RequestId,
        handle: provium_protocol::HandleId,
        len: u64,
    ) -> Result<Option<ConnEnd>, ConnError> {
        let f = match handles::get::<FileHandle>(handle, "read") {
            Ok(f) => f,
            Err(e) => {
                self.reply(id, Err(e))?;
                return Ok(None);
            }
        };
        if f.may_block() {
            self.spawn(id, "file-read", move |_| {
                file::read_waiting(&f, handle, len).map(|b| Reply::Bytes(b.into()))
            });
            return Ok(None);
        }
        let n = file::read_len(len);
        if self.read_buf.len() < n {
            self.read_buf.resize(n, 0);
        }
        match file::read_now(&f, &mut self.read_buf[..n]) {
            Ok(got) => self
                .sender
                .reply_bytes(id, &self.read_buf[..got])
                .map_err(ConnError::Write)?,
            Err(e) => self.reply(id, Err(e))?,
        }
        Ok(None)
    }

    /// Registers call `id` as cancellable (its trigger fires on the host's
    /// `Cancel`); `None` once the refusal (an id already in flight) was
    /// replied.
    fn cancellable(&self, id: RequestId) -> Result<Option<Arc<Trigger>>, ConnError> {
        match self.inflight.add_stream(id) {
            Ok(cancel) => Ok(Some(cancel)),
            Err(f) => {
                self.reply(id, Err(f))?;
                Ok(None)
            }
        }
    }

    fn reply(&self, id: RequestId, result: OpResult) -> Result<(), ConnError> {
        self.sender.reply(id, result).map_err(ConnError::Write)
    }

    /// Runs a blocking operation on a pooled thread; it replies when done.
    fn spawn<F>(&self, id: RequestId, name: &str, op: F)
    where
        F: FnOnce(&Sender) -> OpResult + Send + 'static,
    {
        self.spawn_raw(id, name, move |sender| {
            let result = op(sender);
            if let Err(e) = sender.reply(id, result) {
                debug!("{id}: reply not sent: {e}");
            }
        });
    }

    /// Runs `job` on a pooled thread; `job` sends the reply itself. Only
    /// when no thread can be had is the call answered here.
    fn spawn_raw<F>(&self, id: RequestId, name: &str, job: F)
    where
        F: FnOnce(&Sender) + Send + 'static,
    {
        let sender = self.sender.clone();
        let spawned = ops::spawn_thread(name, move || job(&sender));
        if let Err(e) = spawned {
            log!("{id}: cannot start a thread: {e}");
            let _ = self
                .sender
                .reply(id, Err(internal(format!("cannot start a thread: {e}"))));
        }
    }
}

/// One call on a connection as a [`dispatch::Context`]: cheap plain ops
/// reply at once, blocking ones on a pooled thread.
struct ConnCall<'a> {
    session: &'a mut Session,
    id: RequestId,
    /// The frame the call was decoded from (batches and relays reuse it).
    frame: &'a [u8],
}

impl dispatch::Context for ConnCall<'_> {
    type Out = Result<Option<ConnEnd>, ConnError>;

    fn plain<F>(&mut self, how: How, call: F) -> Self::Out
    where
        F: FnOnce() -> OpResult + Send + 'static,
    {
        match how.thread {
            Some(thread) => self.session.spawn(self.id, thread, move |_| call()),
            None => self.session.reply(self.id, call())?,
        }
        Ok(None)
    }

    fn special(&mut self, _name: &'static str, op: Special) -> Self::Out {
        self.session.special(self.id, op, self.frame)
    }
}
