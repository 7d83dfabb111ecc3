//! The crate's errors.

use std::path::PathBuf;

/// A configuration file that cannot be used: where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message} (hint: see docs/notifications.md; nothing is sent until it loads)", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}
