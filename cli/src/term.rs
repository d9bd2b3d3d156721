//! The host terminal: raw mode for the length of a shell session, and the
//! window size.

use std::io::IsTerminal;

use rustix::termios::{self, OptionalActions, Termios};

/// Why the terminal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TermError {
    /// stdin or stdout is not a terminal
    #[error(
        "{0} is not a terminal: `provium shell` needs one (use `provium run -- CMD` for commands)"
    )]
    NotATerminal(&'static str),
    /// the terminal's settings cannot be read or changed
    #[error("cannot {0} the terminal's settings: {1}")]
    Settings(&'static str, std::io::Error),
}

/// A window size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Checks that stdin and stdout are terminals.
pub fn require_terminal() -> Result<(), TermError> {
    if !std::io::stdin().is_terminal() {
        return Err(TermError::NotATerminal("stdin"));
    }
    if !std::io::stdout().is_terminal() {
        return Err(TermError::NotATerminal("stdout"));
    }
    Ok(())
}

/// The terminal's size (stdout's), if it has a sensible one.
pub fn size() -> Option<WinSize> {
    let ws = termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// stdin in raw mode (no echo, no line editing, no signals from keys, no
/// output processing) until dropped, when the saved settings come back.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin to raw mode.
    pub fn enter() -> Result<RawMode, TermError> {
        let stdin = std::io::stdin();
        let saved =
            termios::tcgetattr(&stdin).map_err(|e| TermError::Settings("read", e.into()))?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)
            .map_err(|e| TermError::Settings("change", e.into()))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Drain: output written in raw mode is shown as it was written.
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Drain, &self.saved);
    }
}
