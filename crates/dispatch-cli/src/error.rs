//! The binary's errors and exit codes ([`EXIT_CODES`]; the book's exit-code
//! reference page is generated from it).

use std::fmt;

use dispatch_runtime::RuntimeError;
use dispatch_store::StoreError;

pub const EXIT_USAGE: i32 = 2;
pub const EXIT_WAIT_TIMEOUT: i32 = 124;
pub const EXIT_DISPATCH: i32 = 125;

/// Every exit code of the binary and what it means.
#[rustfmt::skip]
pub const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "success; for `run` (foreground) and `wait`, the run succeeded"),
    ("1–255", "`run` (foreground) and `wait`: the run's own exit code (128+N when it was killed by signal N; 1 when it ended without one)"),
    ("1", "`eval`: a case failed, passed less often than `--min-pass-rate`, or regressed against `--baseline`; `images --verify`: a parcel was modified"),
    ("2", "usage error: an unknown flag, a missing argument"),
    ("124", "`wait --timeout-ms` expired before the run ended"),
    ("125", "Dispatch could not do what was asked: bad input (a missing path, a malformed Agentfile, a non-JSON payload), an unknown or ambiguous run id, stopping a finished run, a locked or unreadable database, a missing or unhealthy `REQUIRES` dependency, a session in use, a replay without `--allow-side-effects`, a server that refused the request"),
];

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
pub use dispatch_core::error_chain as chain;

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
