//! Boot phase timings, as debug events (`PROVIUM_LOG=debug`).

use std::sync::Arc;

/// Boot phase timings, as debug events (`PROVIUM_LOG=debug`).
#[derive(Clone)]
pub(super) struct Trace {
    start: Option<std::time::Instant>,
    name: Arc<str>,
}

impl Trace {
    pub(super) fn new(name: &str) -> Trace {
        let on = tracing::enabled!(tracing::Level::DEBUG);
        Trace {
            start: on.then(std::time::Instant::now),
            name: Arc::from(name),
        }
    }

    pub(super) fn on(&self) -> bool {
        self.start.is_some()
    }

    pub(super) fn mark(&self, what: &str) {
        if let Some(t) = self.start {
            tracing::debug!(
                "vm {:?}: {:7.1} ms  {what}",
                self.name,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
