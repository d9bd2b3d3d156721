//! Minimal logging to standard error (the guest console when running as PID 1).
//!
//! Writing a log line never fails loudly: a closed or broken standard error is
//! ignored (unlike `eprintln!`, which would panic).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug logging on or off (`provium.debug` on the kernel command line).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug logging is on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one log line, prefixed with the agent's name and pid, in one `write`.
pub fn write(args: fmt::Arguments<'_>) {
    let line = format!("provium-agent[{}]: {}\n", std::process::id(), args);
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Logs a line to standard error.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::write(format_args!($($arg)*))
    };
}

/// Logs a line to standard error when debug logging is on.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write(format_args!($($arg)*))
        }
    };
}
