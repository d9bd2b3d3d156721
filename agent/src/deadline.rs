//! Waiting on a condition variable until a condition holds or a deadline
//! passes (shared by the process output collectors).

use std::sync::{Condvar, MutexGuard};
use std::time::Instant;

/// Waits on `cv` while `pending(&state)` holds; `None` waits without limit.
/// Returns the guard and whether the condition cleared before the deadline.
pub fn wait_while<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    mut pending: impl FnMut(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while pending(&guard) {
        match deadline {
            None => guard = cv.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (guard, false);
                }
                guard = match cv.wait_timeout(guard, left) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        }
    }
    (guard, true)
}
