//! The containment group of a run, in either cgroup version, and how a
//! group's whole content is killed.
//!
//! - v1: the `freezer` hierarchy, `<own path>/dispatch/<run-id>`. The
//!   freezer is the controller that can stop a group at once; `pids` is
//!   left to `RESOURCES` (a process has one group per hierarchy, and a
//!   limit's group there is per attempt). Killing freezes the group (no
//!   process can fork in between), sends SIGKILL to every pid of
//!   `cgroup.procs`, thaws it (a frozen process does not die), and goes
//!   again until the group is empty.
//! - v2: `<own group>/dispatch/<run-id>` in the unified hierarchy, no
//!   controller needed. Killing writes `1` to `cgroup.kill` (Linux 5.14+;
//!   before it, SIGKILL to every pid listed, again until empty). A run whose
//!   `RESOURCES` made a group of their own moves there after entering this
//!   one (v2 has one group per process): that group is killed the same way
//!   at the attempt's end and by recovery (see `crate::limits`).
//!
//! `own` is this process's group: a runtime confined by its caller stays
//! inside what it was given.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::limits::groups::{Version, version};

const ROOT: &str = "/sys/fs/cgroup";
/// How long a kill waits for a group to empty.
const PATIENCE: Duration = Duration::from_secs(5);

/// This process's group where a containment group goes: the `freezer`
/// hierarchy's (v1) or the unified one's (v2).
fn own_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = match version() {
        Version::V2 => text.lines().find_map(|l| l.strip_prefix("0::"))?.trim(),
        Version::V1 => text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "freezer")
                .then_some(path.trim())
        })?,
    };
    let base = match version() {
        Version::V2 => PathBuf::from(ROOT),
        Version::V1 => Path::new(ROOT).join("freezer"),
    };
    Some(base.join(path.trim_start_matches('/')))
}

/// What a containment group is made with, said in the run's sandbox line.
pub(super) fn kind() -> &'static str {
    match version() {
        Version::V1 => "cgroup v1 freezer",
        Version::V2 => "cgroup v2",
    }
}

/// Where a group of run `run` made by an older version of this process
/// would be (`dispatch/<run>`, one per run; groups are one per tree now).
pub(super) fn legacy_dir_for(run: &str) -> Option<PathBuf> {
    Some(own_dir()?.join("dispatch").join(run))
}

/// Trees made by this process (see [`create`]).
static TREES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Creates a group for one tree of run `run`: `dispatch/<run>.<pid>.<n>`,
/// this process's `n`th, so that no two attempts of a run on one machine
/// share one (the leftovers of an old attempt, or its late supervisor,
/// could otherwise kill or remove the next attempt's group under it). A
/// group already there (a dead process's of the same pid) is emptied
/// first. The error says why there is none.
pub(super) fn create(run: &str) -> Result<PathBuf, String> {
    let own = own_dir().ok_or_else(|| match version() {
        Version::V1 => "no freezer hierarchy mounted under /sys/fs/cgroup".to_string(),
        Version::V2 => "this process's cgroup is unknown".to_string(),
    })?;
    if !own.join("cgroup.procs").exists() {
        return Err(format!("{} is not a cgroup", own.display()));
    }
    let n = TREES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = own
        .join("dispatch")
        .join(format!("{run}.{}.{n}", std::process::id()));
    if dir.exists() {
        kill_all(&dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The file a process writes `0` into to enter the group: `tasks` on v1
/// (the thread between fork and exec is the process; see
/// `crate::limits::cgroup_v1` for why not `cgroup.procs`), `cgroup.procs`
/// on v2.
pub(super) fn entry_file(dir: &Path) -> PathBuf {
    match dir.join("freezer.state").exists() {
        true => dir.join("tasks"),
        false => dir.join("cgroup.procs"),
    }
}

/// Whether `dir` is a group this module would make for `run`: a directory
/// under the cgroup mount named `dispatch/<run>` (a recorded path is
/// checked before anything is killed in it).
pub(super) fn is_run_group(dir: &Path, run: &str) -> bool {
    let named = |n: &std::ffi::OsStr| {
        n.to_str().is_some_and(|n| {
            n == run
                || n.strip_prefix(run)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|tree| tree.split('.').all(|p| p.parse::<u64>().is_ok()))
        })
    };
    dir.starts_with(ROOT)
        && dir.file_name().is_some_and(named)
        && dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "dispatch")
        && !dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// The pids in group `dir` now.
pub(super) fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn write(dir: &Path, file: &str, value: &str) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .is_ok()
}

fn subgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in group `dir` and its subgroups (which go), waiting
/// at most [`PATIENCE`]; returns how many processes were signalled. The
/// group itself stays (see [`remove`]).
pub(super) fn kill_all(dir: &Path) -> usize {
    let mut killed = 0;
    for sub in subgroups(dir) {
        killed += kill_all(&sub);
        let _ = std::fs::remove_dir(&sub);
    }
    let freezer = dir.join("freezer.state").exists();
    let deadline = Instant::now() + PATIENCE;
    if !freezer {
        // v2: the kernel kills the whole subtree (SIGKILL, no race with
        // forks). What was listed before is what it killed: the group may be
        // empty by the time it is read again.
        let listed = procs(dir).len();
        if write(dir, "cgroup.kill", "1") {
            while !procs(dir).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if procs(dir).is_empty() {
                return killed + listed;
            }
        }
    }
    loop {
        let mut pids = procs(dir);
        if pids.is_empty() {
            return killed;
        }
        if freezer {
            freeze(dir);
            pids = procs(dir);
        }
        for pid in &pids {
            // Listed in the run's group: one of the run's processes (a pid
            // stays in its group until it exits).
            if kill(Pid::from_raw(*pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        if freezer {
            // A frozen process dies only once thawed.
            let _ = write(dir, "freezer.state", "THAWED");
        }
        if Instant::now() > deadline {
            return killed;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Freezes the group and waits (briefly) until it says `FROZEN`.
fn freeze(dir: &Path) {
    if !write(dir, "freezer.state", "FROZEN") {
        return;
    }
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        let state = std::fs::read_to_string(dir.join("freezer.state")).unwrap_or_default();
        if state.trim() == "FROZEN" {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Removes the (emptied) group (`dispatch/` above it stays: another run
/// may be making its group there at this moment).
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root: a group at `dir` holding a `sleep` and a `setsid` one
    /// (out of the first's session and process group) is emptied by
    /// [`kill_all`], then removed.
    fn kills_everything_in(dir: &Path) {
        std::fs::create_dir_all(dir).expect("the group");
        let mut pids = Vec::new();
        for argv in [&["sleep", "300"][..], &["setsid", "sleep", "300"][..]] {
            let child = std::process::Command::new(argv[0])
                .args(&argv[1..])
                .spawn()
                .expect("spawn");
            let pid = child.id();
            assert!(write(dir, "cgroup.procs", &pid.to_string()), "enter");
            pids.push((pid, child));
        }
        assert_eq!(procs(dir).len(), 2, "{:?}", procs(dir));
        let killed = kill_all(dir);
        assert!(killed >= 2, "{killed}");
        assert!(procs(dir).is_empty());
        for (_, mut child) in pids {
            let status = child.wait().expect("reaped");
            assert!(!status.success(), "killed: {status:?}");
        }
        remove(dir);
        assert!(!dir.exists());
    }

    fn is_root() -> bool {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_v1_freezer_group_is_killed_as_a_unit() {
        let freezer = Path::new(ROOT).join("freezer");
        if !is_root() || !freezer.join("cgroup.procs").exists() {
            return;
        }
        kills_everything_in(&freezer.join(format!("dispatch-test-{}", std::process::id())));
    }

    /// On the unified hierarchy (`/sys/fs/cgroup`, or the one a hybrid
    /// machine mounts at `unified`): `cgroup.kill`.
    #[test]
    fn a_v2_group_is_killed_as_a_unit() {
        let unified = [PathBuf::from(ROOT), Path::new(ROOT).join("unified")]
            .into_iter()
            .find(|p| p.join("cgroup.controllers").exists());
        let Some(unified) = unified.filter(|_| is_root()) else {
            return;
        };
        let dir = unified.join(format!("dispatch-test-{}", std::process::id()));
        kills_everything_in(&dir);
    }

    #[test]
    fn only_a_runs_own_group_is_taken_from_a_record() {
        let run = "0001";
        assert!(is_run_group(
            Path::new("/sys/fs/cgroup/freezer/dispatch/0001"),
            run
        ));
        assert!(is_run_group(
            Path::new("/sys/fs/cgroup/a/b/dispatch/0001"),
            run
        ));
        assert!(is_run_group(
            Path::new("/sys/fs/cgroup/freezer/dispatch/0001.4242.3"),
            run
        ));
        for bad in [
            "/sys/fs/cgroup/freezer/dispatch/0001.x",
            "/sys/fs/cgroup/freezer/dispatch/00011.2.3",
            "/sys/fs/cgroup/freezer",
            "/sys/fs/cgroup/freezer/dispatch/0002",
            "/sys/fs/cgroup/freezer/user/0001",
            "/tmp/dispatch/0001",
            "/sys/fs/cgroup/../../tmp/dispatch/0001",
        ] {
            assert!(!is_run_group(Path::new(bad), run), "{bad}");
        }
    }
}
