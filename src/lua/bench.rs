//! Transport measurements that bypass the RPC layer (for `bench/`): a raw
//! echo and raw bulk transfers on a fresh stream to the agent's service port.

use std::time::Instant;

use provium_protocol as proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::errors::{ApiError, ApiResult};
use crate::runtime;
use crate::vm::raw::RawEndpoint;

/// How long one raw probe may take: a probe that hangs (a desynchronised
/// session) raises instead of blocking the caller forever.
const RAW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `probe` on the side runtime within [`RAW_TIMEOUT`].
fn within<T>(
    probe: impl std::future::Future<Output = Result<T, crate::vm::VmError>> + Send + 'static,
) -> Result<T, crate::vm::VmError>
where
    T: Send + 'static,
{
    runtime::block_on(async move {
        tokio::time::timeout(RAW_TIMEOUT, probe)
            .await
            .unwrap_or_else(|_| {
                Err(crate::vm::VmError::Infra(format!(
                    "no answer within {} s",
                    RAW_TIMEOUT.as_secs()
                )))
            })
    })
}

/// Round-trip times in microseconds of `n` echoes of `size` bytes (after
/// `warmup` untimed ones).
pub fn raw_echo(ep: RawEndpoint, n: usize, size: usize, warmup: usize) -> ApiResult<Vec<f64>> {
    within(async move {
        let mut s = ep.connect().await?;
        s.write_all(proto::RAW_ECHO_MAGIC).await?;
        if ep.counted_echo() {
            let total = ((warmup + n) * size) as u64;
            s.write_all(&total.to_le_bytes()).await?;
        }
        let msg = vec![0x5au8; size];
        let mut back = vec![0u8; size];
        let mut out = Vec::with_capacity(n);
        for i in 0..warmup + n {
            let t = Instant::now();
            s.write_all(&msg).await?;
            s.read_exact(&mut back).await?;
            if i >= warmup {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok::<_, crate::vm::VmError>(out)
    })
    .map_err(|e| ApiError::msg(format!("vm:_raw_echo: {e}")))
}

/// Bytes per second of a raw transfer of `bytes` in one direction:
/// `to_guest` streams into the agent (which discards and acknowledges),
/// otherwise the agent streams to the host.
pub fn raw_bulk(ep: RawEndpoint, bytes: u64, to_guest: bool) -> ApiResult<f64> {
    within(async move {
        let mut s = ep.connect().await?;
        let t = Instant::now();
        if to_guest {
            s.write_all(proto::RAW_SINK_MAGIC).await?;
            s.write_all(&bytes.to_le_bytes()).await?;
            let buf = vec![0xa5u8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
            let mut ack = [0u8; 8];
            s.read_exact(&mut ack).await?;
            if ack != bytes.to_le_bytes() {
                return Err(crate::vm::VmError::Infra(format!(
                    "the raw sink acknowledged {} bytes, not {bytes}",
                    u64::from_le_bytes(ack)
                )));
            }
        } else {
            s.write_all(proto::RAW_SOURCE_MAGIC).await?;
            s.write_all(&bytes.to_le_bytes()).await?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err(crate::vm::VmError::Infra("raw source ended early".into()));
                }
                left = left.saturating_sub(n as u64);
            }
        }
        Ok::<_, crate::vm::VmError>(bytes as f64 / t.elapsed().as_secs_f64())
    })
    .map_err(|e| ApiError::msg(format!("vm:_raw_bulk: {e}")))
}

/// Connects to the agent's service port without the session token, sends
/// `proof`, and returns what came back within `wait` and whether the agent
/// closed the connection (what a stranger on the host would get).
pub fn raw_stranger(
    ep: RawEndpoint,
    proof: Vec<u8>,
    wait: std::time::Duration,
) -> ApiResult<(Vec<u8>, bool)> {
    runtime::block_on(async move {
        let mut s = ep.connect_without_token().await?;
        // The agent may close before all of the proof is written.
        let _ = s.write_all(&proof).await;
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        };
        Ok::<_, crate::vm::VmError>((got, closed))
    })
    .map_err(|e| ApiError::msg(format!("vm:_raw_stranger: {e}")))
}
