//! What a container used: peak memory and CPU time, as the native path
//! records them in the attempt's `resources` event.
//!
//! The container is started with `--cgroup-parent /dispatch-<run>-<attempt>
//! --cgroups no-conmon` (podman with cgroupfs on cgroup v1, as root): its
//! group is made under that parent in every hierarchy, and the parent's
//! counters keep what it used after the container's own group is gone (v1
//! accounting is hierarchical): CPU time is the parent's `cpuacct.usage`,
//! peak memory its `memory.max_usage_in_bytes`. The monitor (`conmon`)
//! stays in the helper's groups: a `conmon` group of its own under a new
//! parent cost 8–10 ms of every start (podman makes it in every hierarchy
//! and moves conmon in), and would count in the parent's usage. When
//! the attempt ends (the container removed), the parent goes in every
//! hierarchy; a killed helper's is removed by the reader that reconciles
//! the run. Elsewhere (docker, cgroup v2, not root) nothing is measured
//! and the event says so.
//!
//! The parent's peak also tells a container the memory limit killed
//! ([`Accounting::reached`]): on cgroup v1 the runtime's `State.OOMKilled`
//! reads false (podman 4.3 with runc), and the container's own group,
//! whose `memory.oom_control` counts the kill, is gone with it.

use std::path::{Path, PathBuf};

use crate::limits::AttemptUsage;

const ROOT: &str = "/sys/fs/cgroup";

/// The parent group of one container.
#[derive(Clone, Debug)]
pub struct Accounting {
    /// `dispatch-<run>-<attempt>`, at the top of each hierarchy.
    name: String,
}

impl Accounting {
    /// Accounting for the container `name`, when it can be measured here.
    pub fn new(name: &str, podman: bool) -> Option<Accounting> {
        // SAFETY: geteuid has no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let v1 = ["memory", "cpuacct"]
            .iter()
            .all(|c| Path::new(ROOT).join(c).join("cgroup.procs").is_file());
        (podman && root && v1).then(|| Accounting {
            name: name.to_string(),
        })
    }

    /// `--cgroup-parent /<name> --cgroups no-conmon`.
    pub fn args(&self) -> [String; 4] {
        [
            "--cgroup-parent".into(),
            format!("/{}", self.name),
            "--cgroups".into(),
            "no-conmon".into(),
        ]
    }

    fn dir(&self, controller: &str) -> PathBuf {
        Path::new(ROOT).join(controller).join(&self.name)
    }

    /// The most memory (with swap, where it is accounted) the container
    /// held at once.
    fn peak_memory(&self) -> Option<u64> {
        let mem = self.dir("memory");
        read(mem.join("memory.memsw.max_usage_in_bytes"))
            .filter(|n| *n > 0)
            .or_else(|| read(mem.join("memory.max_usage_in_bytes")))
            .filter(|n| *n > 0)
    }

    /// Whether the container's memory reached `limit` (less the kernel's
    /// charge batch): read after it exited, a container killed by SIGKILL
    /// at that peak was killed by the limit.
    pub fn reached(&self, limit: u64) -> bool {
        self.peak_memory()
            .is_some_and(|peak| peak >= limit.saturating_sub(1 << 20))
    }

    /// What the container used (after it exited).
    pub fn usage(&self) -> AttemptUsage {
        let cpu = self.dir("cpuacct");
        let cpu_ns = read(cpu.join("cpuacct.usage"));
        AttemptUsage {
            peak_memory_bytes: self.peak_memory(),
            cpu_time_ms: cpu_ns.map(|ns| ns / 1_000_000),
            measured_by: "container cgroup v1".to_string(),
        }
    }

    /// Removes the parent (and the empty groups under it) in every hierarchy.
    pub fn remove(&self) {
        remove_named(&self.name);
    }
}

fn read(p: PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Removes `/sys/fs/cgroup/*/<name>` and its (empty) children.
fn remove_named(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir(ROOT) else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(name);
        if !dir.is_dir() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(&dir) {
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(c.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Removes the container parents of run `run` a killed helper left behind
/// (their containers were removed first).
pub fn remove_leftovers(run: &str) {
    let prefix = format!("dispatch-{run}-");
    let Ok(entries) = std::fs::read_dir(Path::new(ROOT).join("memory")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            remove_named(&name);
        }
    }
}
