//! The tools' own floor, measured beside the concurrency measurement
//! (issue #38 item 3): the same `lookup.sh` its runs call, started with
//! `sh` as many times as they call it (2 a run), two at a time (one per core
//! of the machines it was written for), by this process alone: no Dispatch,
//! no database, no model, no sandbox. Nothing that runs those tool calls
//! can take less CPU than this, so against 1.5× the ideal (9 s) it says how
//! much of that budget the tools' processes leave to everything else.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::report::Report;

/// What the tools' processes cost alone.
pub(super) struct Floor {
    pub spawns: usize,
    pub wall_s: f64,
    pub cpu_ms: u64,
    /// Spawns that failed or exited non-zero (then the lane stops).
    pub failed: usize,
}

/// `spawns` runs of `/bin/sh <tool>` (stdout to /dev/null, the environment only
/// `PATH`), `lanes` at a time, each waited for.
pub(super) fn tools(tool: &Path, spawns: usize, lanes: usize) -> Floor {
    let before = crate::floors::children_cpu_ms();
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for lane in 0..lanes {
            let n = spawns / lanes + usize::from(lane < spawns % lanes);
            let failed = &failed;
            s.spawn(move || {
                for _ in 0..n {
                    // A path, not `sh`: std looks a bare name up with
                    // posix_spawnp(3), but only when the child's PATH is
                    // the caller's; else it forks this process, whose
                    // page tables then cost more than the tool.
                    let status = Command::new("/bin/sh")
                        .arg(tool)
                        .env_clear()
                        .env("PATH", "/usr/bin:/bin")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .status();
                    if !matches!(status, Ok(s) if s.success()) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    Floor {
        spawns,
        wall_s: started.elapsed().as_secs_f64(),
        cpu_ms: (crate::floors::children_cpu_ms() - before).max(0.0) as u64,
        failed: failed.into_inner(),
    }
}

/// Its row and numbers, against the time the runs took (`execution_s`).
pub(super) fn report(f: &Floor, execution_s: f64, out: &mut Report) {
    if f.failed > 0 {
        eprintln!(
            "dispatch-bench native: the floor's `sh lookup.sh` failed {} time(s); its numbers are not a floor",
            f.failed
        );
    }
    let per_spawn = f.cpu_ms as f64 / f.spawns.max(1) as f64;
    out.row(
        "the tools' own floor, beside: as many `sh lookup.sh` as the runs called, two at a time, by the bench alone (no Dispatch, no sandbox)",
        &format!(
            "{} spawns in {:.2} s, {:.1} CPU s ({per_spawn:.2} ms each): {:.0} % of 1.5× the ideal (9 s), {:.0} % of the execution",
            f.spawns,
            f.wall_s,
            f.cpu_ms as f64 / 1e3,
            f.wall_s / 9.0 * 100.0,
            f.wall_s / execution_s * 100.0,
        ),
        "(a floor)",
    );
    let c = "concurrency";
    out.set(c, "floor_tool_spawns", f.spawns);
    out.set(c, "floor_tools_wall_s", f.wall_s);
    out.set(c, "floor_tools_cpu_ms", f.cpu_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_runs_every_spawn_and_a_failing_tool_stops_its_lane() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = dir.path().join("lookup.sh");
        std::fs::write(&tool, "echo 'order: shipped'\n").expect("tool");
        let f = tools(&tool, 7, 2);
        assert_eq!((f.spawns, f.failed), (7, 0));
        // A tool that fails stops its lane: one failure a lane, not a floor.
        std::fs::write(&tool, "exit 3\n").expect("tool");
        let f = tools(&tool, 7, 2);
        assert_eq!(f.failed, 2);
    }
}
