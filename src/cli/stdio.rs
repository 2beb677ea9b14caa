//! Standard output and error without panics: `print!` panics when stdout is closed or full
//! ("failed printing to stdout"); these return what happened instead.
//!
//! A reader that goes away (`| head -1`) ends the run quietly with status 141 (128 + SIGPIPE,
//! what a shell reports for coreutils killed by the signal; Rust ignores SIGPIPE, so the process
//! sees EPIPE and exits with that status itself). Any other write error (`> /dev/full`, a full
//! disk) is named on stderr and the run exits with status 1.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// Exit status after a closed standard output: 128 + SIGPIPE (13).
pub const CLOSED_PIPE_STATUS: u8 = 141;

/// Why standard output could not be written.
#[derive(Debug)]
pub enum StdoutError {
    /// The reader closed the pipe.
    Closed,
    /// Anything else (no space, I/O error).
    Failed(std::io::Error),
}

impl StdoutError {
    /// Reports the failure (nothing for a closed pipe) and gives the exit status.
    pub fn exit(self) -> ExitCode {
        match self {
            StdoutError::Closed => ExitCode::from(CLOSED_PIPE_STATUS),
            StdoutError::Failed(e) => {
                note(&format!("amanuensis: cannot write to standard output: {e}"));
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes `text` to standard output and flushes it.
pub fn out(text: &str) -> Result<(), StdoutError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => StdoutError::Closed,
            _ => StdoutError::Failed(e),
        })
}

/// Writes one line to standard error; a failure to do so is ignored (there is nowhere left to
/// report it, and the exit status still says what happened to the work).
pub fn note(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}
