//! The progress line on stderr while a run goes on. On a terminal it rewrites one
//! line; elsewhere (CI logs) it prints a line every few seconds instead.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Prints progress lines, rate-limited.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    last: Option<Instant>,
    /// Whether the current terminal line holds a progress line to end.
    open: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A progress printer for this process's stderr.
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
            open: false,
        }
    }

    /// Shows `line` (if enough time has passed since the last one).
    pub fn show(&mut self, line: &str) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        // A progress line that cannot be written is not worth failing a run for.
        let _ignored = if self.tty {
            self.open = true;
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ignored = err.flush();
    }

    /// Ends the progress line so that what follows starts on a fresh one.
    pub fn done(&mut self) {
        if self.open {
            let _ignored = writeln!(std::io::stderr());
            self.open = false;
        }
        self.last = None;
    }
}
