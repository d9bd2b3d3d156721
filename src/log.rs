//! Host-side logging through `tracing`, configured by `PROVIUM_LOG`.
//!
//! Progress of long work (image builds, fixture builds) is an `info` event,
//! warnings are `warn` events; both print by default as `provium: ...` lines
//! on stderr. `PROVIUM_LOG` takes a `tracing` target filter:
//! `PROVIUM_LOG=debug` adds the diagnostics (boot phases, connections, QMP,
//! liveness, restarts), `PROVIUM_LOG=provium::transport=trace,info` narrows
//! them, `PROVIUM_LOG=warn` keeps warnings only, `PROVIUM_LOG=off` silences
//! everything. The guest agent logs to the guest console instead (it is PID 1).

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Instant;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable that sets the filter.
pub const ENV: &str = "PROVIUM_LOG";

/// The filter when `PROVIUM_LOG` is unset: progress and warnings.
const DEFAULT_FILTER: &str = "info";

static START: OnceLock<Instant> = OnceLock::new();

/// Installs the stderr logger once per process (later calls do nothing; so
/// does a process that installed a `tracing` subscriber of its own).
pub fn init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        START.get_or_init(Instant::now);
        let (filter, bad) = filter_from(std::env::var(ENV).ok().as_deref());
        let layer = tracing_subscriber::fmt::layer()
            .event_format(Line {
                dim: std::io::stderr().is_terminal(),
            })
            .with_writer(std::io::stderr);
        let installed = tracing_subscriber::registry()
            .with(layer)
            .with(filter)
            .try_init()
            .is_ok();
        if let (true, Some(value)) = (installed, bad) {
            tracing::warn!("{ENV}={value:?} is not a log filter (e.g. \"debug\", \"warn\", \"provium::vm=debug,info\"); using \"{DEFAULT_FILTER}\"");
        }
    });
}

/// The filter for a `PROVIUM_LOG` value, and the value when it is not one.
fn filter_from(value: Option<&str>) -> (Targets, Option<String>) {
    let default = || DEFAULT_FILTER.parse::<Targets>().unwrap_or_default();
    match value.map(str::trim) {
        None | Some("") => (default(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(_) => (default(), Some(v.to_string())),
        },
    }
}

/// One line per event: `provium: message` for progress, `provium: warning:
/// message` for warnings, and the time, level and module for diagnostics.
struct Line {
    /// Dim the `provium:` prefix (stderr is a terminal).
    dim: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.dim {
            write!(w, "\x1b[2mprovium:\x1b[0m ")?;
        } else {
            write!(w, "provium: ")?;
        }
        let meta = event.metadata();
        match *meta.level() {
            Level::INFO => {}
            Level::WARN => write!(w, "warning: ")?,
            Level::ERROR => write!(w, "error: ")?,
            level => {
                let t = START
                    .get()
                    .map(|s| s.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                write!(w, "[{t:9.3} {level:5} {}] ", meta.target())?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn the_default_shows_progress_and_warnings_only() {
        let (f, bad) = filter_from(None);
        assert!(bad.is_none());
        assert!(f.would_enable("provium::image", &Level::INFO));
        assert!(!f.would_enable("provium::vm", &Level::DEBUG));
    }

    #[test]
    fn a_filter_narrows_or_widens() {
        let (f, _) = filter_from(Some("provium::transport=trace,info"));
        assert!(f.would_enable("provium::transport::client", &Level::TRACE));
        assert!(!f.would_enable("provium::vm", &Level::DEBUG));
        assert!(f.would_enable("provium::vm", &Level::INFO));
        let (off, _) = filter_from(Some("off"));
        assert_eq!(off.default_level(), Some(LevelFilter::OFF));
    }

    #[test]
    fn a_bad_value_falls_back_and_is_reported() {
        let (f, bad) = filter_from(Some("provium=loud"));
        assert_eq!(bad.as_deref(), Some("provium=loud"));
        assert!(f.would_enable("provium::image", &Level::INFO));
    }
}
