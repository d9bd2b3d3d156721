//! The benchmarks' raw virtio-serial port ([`RAW_PORT_NAME`]): what the raw
//! probes of vsock's [`provium_protocol::AGENT_PORT`] measure, on a
//! virtio-serial port beside the agent's, so that the serial transport's
//! own rate can be told (`bench/bulk.lua`, `bench/rpc.lua`).
//!
//! Each session starts with a magic and a u64 LE count: [`RAW_ECHO_MAGIC`]
//! (that many bytes come back as they arrive), [`RAW_SINK_MAGIC`] or
//! [`RAW_SOURCE_MAGIC`]. Unlike vsock's probes, whose sessions end with
//! their connections, the echo here is counted: a host that closes and
//! reconnects at once may have its next session's bytes read before the
//! guest sees the close, and an echo until end of file would echo them.
//! No token: only the host reaches a virtio-serial port. When the host is not connected a read
//! returns end of file at once; the thread then waits 20 ms and reads
//! again.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::thread;

use provium_protocol::{
    CHUNK_LEN, RAW_ECHO_MAGIC, RAW_PORT_NAME, RAW_SINK_MAGIC, RAW_SOURCE_MAGIC,
};

use std::time::Duration;

use crate::vports;

/// How long to wait before reading the port again while no host is connected.
const RETRY: Duration = Duration::from_millis(20);

/// Serves the raw port forever (a thread of the op server).
pub fn serve() {
    let path = vports::wait(RAW_PORT_NAME);
    let mut port = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            log!("cannot open {}: {e}", path.display());
            return;
        }
    };
    loop {
        let mut magic = [0u8; RAW_ECHO_MAGIC.len()];
        match read_full(&mut port, &mut magic) {
            Ok(true) => {}
            Ok(false) => {
                thread::sleep(RETRY);
                continue;
            }
            Err(e) => {
                debug!("raw port: {e}");
                thread::sleep(RETRY);
                continue;
            }
        }
        let ended = if &magic == RAW_ECHO_MAGIC {
            echo(&mut port)
        } else if &magic == RAW_SINK_MAGIC {
            sink(&mut port)
        } else if &magic == RAW_SOURCE_MAGIC {
            source(&mut port)
        } else {
            debug!("raw port: unknown magic {magic:?}");
            Ok(())
        };
        if let Err(e) = ended {
            debug!("raw port session ended: {e}");
        }
    }
}

/// Fills `buf`; false when the stream ended before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads a u64 count, then writes back that many bytes as they arrive.
fn echo(s: &mut (impl Read + Write)) -> io::Result<()> {
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let mut left = u64::from_le_bytes(count);
    let mut buf = vec![0u8; CHUNK_LEN];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match s.read(&mut buf[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads a u64 count, discards that many bytes, writes the count back.
pub fn sink(stream: &mut (impl Read + Write)) -> io::Result<()> {
    let mut count = [0u8; 8];
    stream.read_exact(&mut count)?;
    let mut left = u64::from_le_bytes(count);
    let mut buf = vec![0u8; CHUNK_LEN];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    stream.write_all(&count)
}

/// Reads a u64 count and writes that many bytes.
pub fn source(stream: &mut (impl Read + Write)) -> io::Result<()> {
    let mut count = [0u8; 8];
    stream.read_exact(&mut count)?;
    let mut left = u64::from_le_bytes(count);
    let buf = vec![0x5au8; CHUNK_LEN];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.write_all(&buf[..n])?;
        left -= n as u64;
    }
    stream.flush()
}
