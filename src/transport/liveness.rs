//! Liveness of an agent connection: when the agent was last heard from, and
//! when a silent one counts as stalled.
//!
//! Every frame received is a sign of life, and so is room appearing in a
//! socket that was full (the peer reads: a long upload gets no replies). A call that waits sends a `Ping` after [`PING_AFTER`] of silence
//! (the agent answers pings on its connection thread, whatever else it is
//! doing), and gives up when the silence reaches the stall timeout: a
//! frozen guest (halted vCPUs, a stopped QEMU, a stopped agent) then fails
//! the call in bounded time instead of hanging it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Silence after which a waiting call pings the agent, and the interval
/// between pings while the silence lasts.
pub const PING_AFTER: Duration = Duration::from_secs(1);

/// Default stall timeout: a guest that answers nothing, not even a ping, for
/// this long is declared unresponsive. Generous because a TCG guest on a
/// loaded host can be slow; a healthy one answers a ping in milliseconds.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// How often a blocked wait looks at the clock, the stall timeout and
/// Ctrl-C (the latency of an interrupt).
pub const WAIT_SLICE: Duration = Duration::from_millis(50);

/// Signs of life of one connection.
pub struct Liveness {
    origin: Instant,
    /// Milliseconds since `origin` of the last sign of life.
    last: AtomicU64,
    /// Milliseconds since `origin` of the last ping sent.
    last_ping: AtomicU64,
    /// Stall timeout in milliseconds; 0: never.
    stall_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            last_ping: AtomicU64::new(0),
            stall_ms: AtomicU64::new(DEFAULT_STALL.as_millis() as u64),
        }
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Records a sign of life.
    pub fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Sets the stall timeout (`None`: never stall).
    pub fn set_stall_after(&self, after: Option<Duration>) {
        let ms = after.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.stall_ms.store(ms, Ordering::Relaxed);
    }

    /// The stall timeout, if any.
    pub fn stall_after(&self) -> Option<Duration> {
        match self.stall_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Silence as seen by a wait that began at `start`: signs of life from
    /// before the wait do not count against it.
    pub fn silence(&self, start: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last.max(start))
    }

    /// Whether a ping is due now; claims it (one ping per [`PING_AFTER`]
    /// across all waiters).
    pub fn claim_ping(&self) -> bool {
        let now = self.now_ms();
        let prev = self.last_ping.load(Ordering::Relaxed);
        now.saturating_sub(prev) >= PING_AFTER.as_millis() as u64
            && self
                .last_ping
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_later_of_the_wait_and_the_last_sign() {
        let l = Liveness::default();
        std::thread::sleep(Duration::from_millis(30));
        let start = Instant::now();
        assert!(l.silence(start) < Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(l.silence(start) >= Duration::from_millis(30));
        l.touch();
        assert!(l.silence(start) < Duration::from_millis(20));
    }

    #[test]
    fn stall_timeout_and_ping_claims() {
        let l = Liveness::default();
        assert_eq!(l.stall_after(), Some(DEFAULT_STALL));
        l.set_stall_after(None);
        assert_eq!(l.stall_after(), None);
        l.set_stall_after(Some(Duration::from_millis(1500)));
        assert_eq!(l.stall_after(), Some(Duration::from_millis(1500)));
        // The first claim needs PING_AFTER since the origin.
        assert!(!l.claim_ping());
    }
}
