//! Warnings and notes the runtime writes on stderr. In a process that
//! installed a log subscriber (`dispatch server`, `dispatch worker`) they go
//! through `tracing`, so `--log-format json` keeps every line JSON; in one
//! that did not (the helpers `dispatch run` starts, whose stderr is the
//! run's log) they stay the plain lines they always were.

use std::fmt::Arguments;

/// A warning: `tracing::warn!` or a plain line.
pub fn warn(line: Arguments<'_>) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// A note: `tracing::info!` or a plain line.
pub fn info(line: Arguments<'_>) {
    if tracing::dispatcher::has_been_set() {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// [`warn`] with `format!` arguments.
#[macro_export]
macro_rules! say_warn {
    ($($arg:tt)*) => { $crate::say::warn(format_args!($($arg)*)) };
}

/// [`info`] with `format!` arguments.
#[macro_export]
macro_rules! say_info {
    ($($arg:tt)*) => { $crate::say::info(format_args!($($arg)*)) };
}
