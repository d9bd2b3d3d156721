//! This agent's client side of a worker's channel.
//!
//! Calls are forwarded under request ids of the link's own; a route maps
//! each to the host call (connection, id) it serves. One pooled reader
//! thread per worker passes `Data` frames through without decoding their
//! bytes and re-addresses each reply by rewriting only its id (the encoded
//! result is copied as it is). When the channel ends, every call still
//! routed fails with `ESRCH` (`libc`'s constant, used only as the number
//! sent to the host).

use std::collections::HashMap;
use std::io::{self, IoSlice, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use provium_protocol::wire::{
    AGENT_HELLO_REJECTED, AGENT_REPLY, HOST_CALL, HOST_CANCEL, HOST_DATA, HOST_HELLO, OP_IN_WORKER,
};
use provium_protocol::{AgentMsg, Failure, HandleId, RequestId, SessionToken, FRAME_HEADER_LEN};

use super::Worker;
use crate::frames::FrameReader;
use crate::inflight::{InFlight, Relay};
use crate::sender::{push_varint, Sender};

/// The frame of a host message made of a variant and one integer:
/// `Hello { version }` or `Cancel { id }`. Built by hand: encoding a
/// `HostMsg` through serde would put the serialiser of every `Op` into the
/// binary for two messages that never carry one.
pub fn small_frame(variant: u8, value: u64) -> Vec<u8> {
    let mut frame = vec![0; FRAME_HEADER_LEN];
    frame.push(variant);
    push_varint(&mut frame, value);
    let len = (frame.len() - FRAME_HEADER_LEN) as u32;
    frame[..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    frame
}

/// The frame of `HostMsg::Hello { version, token }` with an all-zero
/// token: a worker serves only its parent's pipe and never learns tokens.
pub fn hello_frame(version: u32) -> Vec<u8> {
    let mut frame = small_frame(HOST_HELLO, u64::from(version));
    frame.extend_from_slice(&[0; SessionToken::LEN]);
    let len = (frame.len() - FRAME_HEADER_LEN) as u32;
    frame[..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    frame
}

/// The encoded inner op of a `Call { op: InWorker { worker, op } }` frame
/// body: relayed as it is, so an op is never re-encoded (nor copied into
/// an owned message) on its way to a worker.
pub fn inner_op(body: &[u8]) -> Option<&[u8]> {
    let rest = body.strip_prefix(&[HOST_CALL])?;
    let (_, rest) = postcard::take_from_bytes::<RequestId>(rest).ok()?;
    let rest = rest.strip_prefix(&[OP_IN_WORKER])?;
    let (_, rest) = postcard::take_from_bytes::<HandleId>(rest).ok()?;
    Some(rest)
}

/// Where the answer to a forwarded call goes.
struct Route {
    sender: Sender,
    host: RequestId,
    inflight: InFlight,
}

struct Routes {
    map: HashMap<u64, Route>,
    /// The channel ended: no new routes.
    dead: bool,
}

/// The channel to one worker.
pub struct Link {
    writer: Mutex<Option<UnixStream>>,
    routes: Mutex<Routes>,
    next: AtomicU64,
}

impl Link {
    /// Starts the reader thread of a channel whose handshake is done.
    pub fn start(stream: UnixStream, reader: FrameReader<UnixStream>) -> io::Result<Arc<Link>> {
        let link = Arc::new(Link {
            writer: Mutex::new(Some(stream)),
            routes: Mutex::new(Routes {
                map: HashMap::new(),
                dead: false,
            }),
            next: AtomicU64::new(1),
        });
        let l = Arc::clone(&link);
        crate::ops::spawn_thread("worker-link", move || l.read_loop(reader))?;
        Ok(link)
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Option<UnixStream>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gone() -> Failure {
        Failure::os(libc::ESRCH, "the worker has exited (its channel is closed)")
    }

    /// Writes whole frames given in parts; a failure closes the writer.
    fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut writer = self.writer();
        let Some(stream) = writer.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            match stream.write_vectored(rest) {
                Ok(0) => {
                    *writer = None;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    *writer = None;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Forwards a cancel, ignoring failures (the reader thread notices a
    /// dead channel).
    pub fn cancel(&self, inner: RequestId) {
        let _ = self.write_parts(&[&small_frame(HOST_CANCEL, inner.0)]);
    }

    /// Forwards a host call to the worker; `op` is the op's encoding.
    pub fn forward(
        &self,
        worker: &Arc<Worker>,
        sender: &Sender,
        host: RequestId,
        op: &[u8],
        inflight: &InFlight,
    ) -> Result<(), Failure> {
        let inner = RequestId(self.next.fetch_add(1, Ordering::Relaxed));
        let mut head = Vec::with_capacity(FRAME_HEADER_LEN + 11);
        head.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        head.push(HOST_CALL);
        push_varint(&mut head, inner.0);
        let len = u32::try_from(head.len() - FRAME_HEADER_LEN + op.len())
            .map_err(|_| crate::error::bad_request("in_worker: op too large"))?;
        head[..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        inflight.add_relay(
            host,
            Relay {
                peer: Arc::clone(worker) as Arc<dyn crate::inflight::RelayPeer>,
                inner,
            },
        )?;
        {
            let mut routes = self.routes();
            if routes.dead {
                drop(routes);
                inflight.end_relay(host);
                return Err(Self::gone());
            }
            routes.map.insert(
                inner.0,
                Route {
                    sender: sender.clone(),
                    host,
                    inflight: inflight.clone(),
                },
            );
        }
        if self.write_parts(&[&head, op]).is_err() {
            // The reader thread fails the route when it sees the end of
            // the channel, unless it already did.
            if self.routes().map.remove(&inner.0).is_some() {
                inflight.end_relay(host);
                return Err(Self::gone());
            }
        }
        Ok(())
    }

    /// Forwards an upload chunk without copying it.
    pub fn data(&self, inner: RequestId, chunk: &[u8], last: bool) {
        let mut head = Vec::with_capacity(FRAME_HEADER_LEN + 21);
        head.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        head.push(HOST_DATA);
        push_varint(&mut head, inner.0);
        push_varint(&mut head, chunk.len() as u64);
        let Ok(len) = u32::try_from(head.len() - FRAME_HEADER_LEN + chunk.len() + 1) else {
            return;
        };
        head[..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        let _ = self.write_parts(&[&head, chunk, &[u8::from(last)]]);
    }

    /// Ends the channel (the worker sees end of file and exits).
    pub fn shutdown(&self) {
        if let Some(stream) = self.writer().take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The reader thread: relays until the channel ends.
    fn read_loop(&self, mut reader: FrameReader<UnixStream>) {
        while let Ok(Some(body)) = reader.next_frame() {
            if !self.relay(body) {
                break;
            }
        }
        let orphans: Vec<Route> = {
            let mut routes = self.routes();
            routes.dead = true;
            routes.map.drain().map(|(_, r)| r).collect()
        };
        self.shutdown();
        for route in orphans {
            route.inflight.end_relay(route.host);
            let _ = route.sender.reply(route.host, Err(Self::gone()));
        }
    }

    /// Relays one frame from the worker; false ends the channel.
    fn relay(&self, body: &[u8]) -> bool {
        if let Some(view) = AgentMsg::data_view(body) {
            let Ok(view) = view else { return false };
            let target = self
                .routes()
                .map
                .get(&view.id.0)
                .map(|r| (r.sender.clone(), r.host));
            if let Some((sender, host)) = target {
                let _ = sender.data(host, view.channel, &body[view.chunk]);
            }
            return true;
        }
        match body.first() {
            Some(&AGENT_REPLY) => {
                let Ok((inner, result)) = postcard::take_from_bytes::<RequestId>(&body[1..]) else {
                    return false;
                };
                let route = self.routes().map.remove(&inner.0);
                if let Some(route) = route {
                    route.inflight.end_relay(route.host);
                    let _ = route.sender.reply_encoded(route.host, result);
                }
                true
            }
            Some(&AGENT_HELLO_REJECTED) => false,
            // A hello in mid-session cannot happen; ignore anything else.
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provium_protocol::{encode, HostMsg, Op, OpenMode, FRAME_HEADER_LEN};

    #[test]
    fn hand_built_host_frames_match_postcard() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(
                small_frame(HOST_CANCEL, v),
                encode(&HostMsg::Cancel { id: RequestId(v) }).unwrap()
            );
        }
        for v in [0u32, 1, 200, u32::MAX] {
            assert_eq!(
                hello_frame(v),
                encode(&HostMsg::Hello {
                    version: v,
                    token: SessionToken([0; SessionToken::LEN])
                })
                .unwrap()
            );
        }
    }

    #[test]
    fn inner_op_is_the_encoding_of_the_op() {
        let inner = Op::OpenFile {
            path: b"/etc/hostname".to_vec(),
            mode: OpenMode {
                read: true,
                ..Default::default()
            },
        };
        for (id, worker) in [(1u64, 1u64), (300, 70_000), (u64::MAX, u64::MAX)] {
            let frame = encode(&HostMsg::Call {
                id: RequestId(id),
                op: Op::InWorker {
                    worker: HandleId(worker),
                    op: Box::new(inner.clone()),
                },
            })
            .unwrap();
            let op = inner_op(&frame[FRAME_HEADER_LEN..]).unwrap();
            assert_eq!(op, postcard::to_allocvec(&inner).unwrap());
        }
        let other = encode(&HostMsg::Call {
            id: RequestId(1),
            op: Op::Ping,
        })
        .unwrap();
        assert!(inner_op(&other[FRAME_HEADER_LEN..]).is_none());
    }
}
