//! Processes of the runs still alive: orphans, once every run has ended and
//! every worker has stopped.

use std::collections::HashSet;

/// Pids of processes whose environment names one of `runs`
/// (`DISPATCH_RUN_ID=<id>`), with their command lines.
pub(super) fn of_runs(runs: &HashSet<String>) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let names_one = environ.split(|b| *b == 0).any(|var| {
            var.strip_prefix(b"DISPATCH_RUN_ID=")
                .and_then(|id| std::str::from_utf8(id).ok())
                .is_some_and(|id| runs.contains(id))
        });
        if names_one {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}
