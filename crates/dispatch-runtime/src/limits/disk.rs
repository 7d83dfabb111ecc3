//! `DISK`: the helper measures the run directory (workspace, events,
//! artifacts, output) on its watch tick, at most every [`DISK_CHECK`], and
//! the run is stopped once it holds more than the limit. `RLIMIT_FSIZE`
//! (set with the other limits) stops a single file from growing past it
//! between two checks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the run directory is measured.
pub(crate) const DISK_CHECK: Duration = Duration::from_millis(500);

pub(crate) struct DiskWatch {
    dir: PathBuf,
    limit: u64,
    checked: Option<Instant>,
}

/// Bytes under `dir` (files counted by size; links not followed).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

impl DiskWatch {
    pub(crate) fn new(dir: PathBuf, limit: u64) -> DiskWatch {
        DiskWatch {
            dir,
            limit,
            checked: None,
        }
    }

    /// Whether the run directory is over the limit (measured when due).
    pub(crate) fn over(&mut self, now: Instant) -> bool {
        if self
            .checked
            .is_some_and(|t| now.duration_since(t) < DISK_CHECK)
        {
            return false;
        }
        self.checked = Some(now);
        dir_size(&self.dir) > self.limit
    }
}
