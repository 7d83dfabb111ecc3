//! A run's leftover processes found without a group (no writable cgroup
//! here, or a run started before containment): every process whose
//! environment names the run (`DISPATCH_RUN_ID=<id>`, which every process
//! started for it inherits unless it clears its environment) or whose root
//! directory is inside the run's directory. Not its working directory: a
//! person's shell may be looking at a kept workspace. Each one's process
//! group is killed, then the process itself (it may have left its group).
//! Best effort: a process that cleared its environment is not found, which
//! `docs/security.md` says.

use std::path::Path;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid};

/// Kills run `run`'s processes found in `/proc`; returns how many.
pub(super) fn kill_found(run: &str, run_dir: &Path) -> usize {
    let me = std::process::id() as i32;
    let my_group = getpgid(None).map(Pid::as_raw).unwrap_or(0);
    let dir = run_dir
        .canonicalize()
        .unwrap_or_else(|_| run_dir.to_path_buf());
    let needle = format!("DISPATCH_RUN_ID={run}");
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || pid <= 1 {
            continue;
        }
        let inside =
            |link: &str| std::fs::read_link(e.path().join(link)).is_ok_and(|p| p.starts_with(&dir));
        let named = std::fs::read(e.path().join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()));
        if !(named || inside("root")) {
            continue;
        }
        let pid = Pid::from_raw(pid);
        if let Ok(group) = getpgid(Some(pid))
            && group.as_raw() > 1
            && group.as_raw() != my_group
        {
            let _ = killpg(group, Signal::SIGKILL);
        }
        if kill(pid, Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}
