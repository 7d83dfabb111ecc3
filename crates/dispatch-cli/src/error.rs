//! The binary's errors and exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (for `run` and `wait`: the run succeeded) |
//! | 1–255 | for `run` (foreground) and `wait`: the run's exit code; 1 when it ended without one |
//! | 1 | for `eval`: a case failed, passed less than `--min-pass-rate` of its repeats, or regressed against `--baseline` |
//! | 2 | usage error: unknown flag, missing argument |
//! | 124 | `wait --timeout-ms` expired before the run ended |
//! | 125 | dispatch could not do what was asked: bad input, unknown or ambiguous id, finished run, locked or unreadable database |

use std::fmt;

use dispatch_runtime::RuntimeError;
use dispatch_store::StoreError;

pub const EXIT_USAGE: i32 = 2;
pub const EXIT_WAIT_TIMEOUT: i32 = 124;
pub const EXIT_DISPATCH: i32 = 125;

/// One line for the user and the exit code that goes with it.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// Bad input: exit 125.
    pub fn input(message: impl Into<String>) -> Self {
        CliError::new(EXIT_DISPATCH, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error and each of its causes, joined: `what: why: root cause`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

impl From<RuntimeError> for CliError {
    fn from(e: RuntimeError) -> Self {
        CliError::input(chain(&e))
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::input(chain(&e))
    }
}

impl From<dispatch_core::parcel::ParcelError> for CliError {
    fn from(e: dispatch_core::parcel::ParcelError) -> Self {
        CliError::input(chain(&e))
    }
}

pub type CliResult<T = i32> = Result<T, CliError>;

/// The exit code of a command's result, its error printed first.
pub fn exit_code(result: CliResult) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed stderr must not turn the error into a panic.
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "error: {e}");
            e.code
        }
    }
}
