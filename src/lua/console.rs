//! Console helpers for Lua calls: waiting for text, and the tail that
//! infrastructure errors carry.

use std::time::{Duration, Instant};

use crate::lua::args::quote;
use crate::lua::errors::{ApiError, ApiResult};
use crate::vm::console::{Console, TAIL_LINES};

/// Waits until `pattern` (a plain substring) appears in the console log.
pub fn console_expect(console: &Console, pattern: &[u8], timeout: Duration) -> ApiResult<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = console.contents();
    let mut pos = console.end_offset();
    loop {
        if pattern.is_empty() || seen.windows(pattern.len()).any(|w| w == pattern) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ApiError::msg(format!(
                "console:expect timed out after {:.1} s waiting for {}",
                timeout.as_secs_f64(),
                quote(pattern)
            )));
        }
        let (more, end, ended) = console.read_from(pos, Some(left));
        // Keep a tail of what was seen so a match across two reads is found.
        let keep = seen.len().saturating_sub(pattern.len());
        seen.drain(..keep);
        seen.extend_from_slice(&more);
        pos = end;
        if ended && more.is_empty() {
            return Err(ApiError::msg(format!(
                "console:expect: the console ended (QEMU exited) before {} appeared",
                quote(pattern)
            )));
        }
    }
}

/// The console tail that infrastructure errors end with.
pub fn console_note(console: &Console) -> String {
    let tail = console.tail(TAIL_LINES);
    if tail.trim().is_empty() {
        String::from("\n(the guest console is empty)")
    } else {
        format!("\n--- guest console (last {TAIL_LINES} lines) ---\n{tail}")
    }
}
