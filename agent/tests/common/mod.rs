//! A host side for driving `conn::serve` over a Unix socket pair.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use provium_agent::conn::{self, ConnEnd, ConnError, ServeOptions};
use provium_protocol::{
    decode, encode, read_frame, AgentHello, AgentMsg, Failure, HostMsg, Op, Reply, RequestId,
    SessionToken, PROTOCOL_VERSION,
};

pub type AgentResult = Result<ConnEnd, ConnError>;

/// The host end of a connection to an agent running on a thread.
pub struct Host {
    pub stream: UnixStream,
    pub reader: BufReader<UnixStream>,
    pub agent: Option<JoinHandle<AgentResult>>,
    pub hello: Option<AgentHello>,
    next_id: u64,
}

/// Starts an agent on a socket pair; reads its hello but sends nothing yet.
pub fn connect(opts: ServeOptions) -> Host {
    let (host, agent) = UnixStream::pair().unwrap();
    let agent_thread = std::thread::spawn(move || {
        let writer = agent.try_clone().unwrap();
        conn::serve(agent, writer, opts)
    });
    host.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reader = BufReader::new(host.try_clone().unwrap());
    let mut h = Host {
        stream: host,
        reader,
        agent: Some(agent_thread),
        hello: None,
        next_id: 1,
    };
    match h.recv() {
        AgentMsg::Hello(hello) => h.hello = Some(hello),
        other => panic!("expected hello, got {other:?}"),
    }
    h
}

/// Starts an agent and completes the handshake.
pub fn start() -> Host {
    let mut h = connect(ServeOptions::default());
    h.send(&HostMsg::Hello {
        version: PROTOCOL_VERSION,
        token: SessionToken([0; SessionToken::LEN]),
    });
    h
}

impl Host {
    pub fn send(&mut self, msg: &HostMsg) {
        self.stream.write_all(&encode(msg).unwrap()).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads the next message. A read_file size hint is answered with the
    /// go the agent waits for (as the rock does) before it is returned.
    pub fn recv(&mut self) -> AgentMsg {
        let body = read_frame(&mut self.reader)
            .expect("read error")
            .expect("agent closed the connection");
        let msg: AgentMsg = decode(&body).unwrap();
        if let AgentMsg::Data { id, channel, .. } = &msg {
            if *channel == provium_protocol::CH_SIZE_HINT {
                self.send(&HostMsg::Data {
                    id: *id,
                    chunk: Default::default(),
                    last: true,
                });
            }
        }
        msg
    }

    /// Reads the next frame; `None` when the agent closed the connection.
    pub fn try_recv(&mut self) -> Option<AgentMsg> {
        read_frame(&mut self.reader)
            .ok()
            .flatten()
            .map(|body| decode(&body).unwrap())
    }

    /// True once the agent closed its end.
    pub fn at_eof(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }

    pub fn id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    pub fn start_call(&mut self, op: Op) -> RequestId {
        let id = self.id();
        self.send(&HostMsg::Call { id, op });
        id
    }

    /// Waits for the reply of `id`, collecting its Data frames per channel.
    /// Frames of other calls are not expected here.
    pub fn finish_call(&mut self, id: RequestId) -> (Chunks, Result<Reply, Failure>) {
        let mut data = Chunks::default();
        loop {
            match self.recv() {
                AgentMsg::Data {
                    id: got,
                    channel,
                    chunk,
                } => {
                    assert_eq!(got, id, "data for another call");
                    data.push(channel, chunk.into_vec());
                }
                AgentMsg::Reply { id: got, result } => {
                    assert_eq!(got, id, "reply for another call");
                    return (data, result);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub fn call_full(&mut self, op: Op) -> (Chunks, Result<Reply, Failure>) {
        let id = self.start_call(op);
        self.finish_call(id)
    }

    pub fn call(&mut self, op: Op) -> Result<Reply, Failure> {
        let (data, result) = self.call_full(op);
        assert!(data.0.is_empty(), "unexpected data frames");
        result
    }

    /// Runs a batch → all its results in order: the runs sent ahead as
    /// `Data` on `CH_BODY`, then those of the reply.
    pub fn call_batch(&mut self, ops: Vec<Op>) -> Result<Vec<Result<Reply, Failure>>, Failure> {
        let (data, result) = self.call_full(Op::Batch(ops));
        let mut results = batch_results_ahead(&data);
        match result? {
            Reply::Batch(last) => results.extend(last),
            other => panic!("not a batch reply: {other:?}"),
        }
        Ok(results)
    }

    /// Closes the host end and returns how `serve` ended.
    pub fn close(mut self) -> AgentResult {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.join()
    }

    pub fn join(&mut self) -> AgentResult {
        self.agent.take().unwrap().join().unwrap()
    }
}

/// Data frames of one call: channel → (chunk sizes, concatenated bytes).
#[derive(Default, Debug)]
pub struct Chunks(pub HashMap<u8, (Vec<usize>, Vec<u8>)>);

/// The results a batch sent ahead of its reply (every `CH_BODY` chunk is a
/// whole number of encoded results).
pub fn batch_results_ahead(data: &Chunks) -> Vec<Result<Reply, Failure>> {
    let mut out = Vec::new();
    let mut at = 0;
    let bytes = data.bytes(provium_protocol::CH_BODY);
    for size in data.sizes(provium_protocol::CH_BODY) {
        let mut run = &bytes[at..at + size];
        at += size;
        while !run.is_empty() {
            let (r, rest) = postcard::take_from_bytes(run).expect("a whole result");
            out.push(r);
            run = rest;
        }
    }
    out
}

impl Chunks {
    fn push(&mut self, channel: u8, chunk: Vec<u8>) {
        let e = self.0.entry(channel).or_default();
        e.0.push(chunk.len());
        e.1.extend(chunk);
    }

    pub fn bytes(&self, channel: u8) -> Vec<u8> {
        self.0
            .get(&channel)
            .map(|e| e.1.clone())
            .unwrap_or_default()
    }

    pub fn sizes(&self, channel: u8) -> Vec<usize> {
        self.0
            .get(&channel)
            .map(|e| e.0.clone())
            .unwrap_or_default()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "provium-agent-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir.canonicalize().unwrap())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

/// A byte string for the wire.
pub fn bb(s: &str) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(s.as_bytes().to_vec())
}

/// An open mode from flags.
pub fn mode(spec: &str) -> provium_protocol::OpenMode {
    provium_protocol::OpenMode {
        read: spec.contains('r'),
        write: spec.contains('w'),
        append: spec.contains('a'),
        create: spec.contains('c'),
        truncate: spec.contains('t'),
        exclusive: spec.contains('x'),
        perm: None,
    }
}

/// Opens a file through the agent; panics on failure.
pub fn open(h: &mut Host, p: &Path, spec: &str) -> provium_protocol::HandleId {
    match h.call(Op::OpenFile {
        path: bytes(p),
        mode: mode(spec),
    }) {
        Ok(Reply::Handle(handle)) => handle,
        other => panic!("open {}: {other:?}", p.display()),
    }
}

/// Makes workers run the agent binary built for these tests.
pub fn use_agent_binary() {
    provium_agent::worker::set_program(env!("CARGO_BIN_EXE_provium-agent"));
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: plain system call.
    unsafe { libc::geteuid() == 0 }
}

/// Waits for a stream's acknowledgement: the empty `Data` frame an open
/// source sends first.
pub fn expect_ack(h: &mut Host, id: RequestId) {
    match h.recv() {
        AgentMsg::Data {
            id: got,
            channel: provium_protocol::CH_BODY,
            chunk,
        } if got == id && chunk.is_empty() => {}
        other => panic!("expected the acknowledgement of {id}, got {other:?}"),
    }
}
