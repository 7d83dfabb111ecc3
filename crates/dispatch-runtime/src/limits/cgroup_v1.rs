//! Control groups, version 1: one group per attempt in each of the `memory`,
//! `pids`, `cpu` and `cpuacct` hierarchies mounted under `/sys/fs/cgroup/`.
//!
//! Written by hand rather than with the `cgroups-rs` crate: the agent must be
//! inside its group before it executes (a fork bomb or a memory hog must not
//! get a head start), so the runtime opens each group's `tasks` before
//! spawning and the child writes `0` ("myself") into those descriptors from a
//! `pre_exec` hook — a raw `write(2)`, the only thing allowed between fork and
//! exec. `tasks`, not `cgroup.procs`: the child is one thread between fork
//! and exec, so moving the thread moves the process, and the kernel moves
//! the calling thread without the global threadgroup lock, whose first
//! writer waits out an RCU grace period (10–15 ms measured here, on every
//! attempt; see BENCHMARKS.md, "RESOURCES"). `cgroups-rs` adds tasks by pid after the fact and allocates on every
//! call; what we need from cgroupfs is a dozen file writes.
//!
//! Each group is created under this process's own group in that hierarchy
//! (`/proc/self/cgroup`), so a runtime confined by its caller (as on machines
//! where the memory group is `/process_api/<hash>`) stays inside what it was
//! given. A hierarchy that is not mounted, or where `mkdir` is refused, is
//! left out: the limit it would carry falls back to an rlimit or is reported
//! as not applied.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use dispatch_core::isolation::Resources;

const ROOT: &str = "/sys/fs/cgroup";
/// The CFS period the CPU quota is expressed in (the kernel's default).
const CFS_PERIOD_US: u64 = 100_000;

/// The groups of one attempt, one per controller that could be created.
pub(crate) struct Groups {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    /// `tasks` of every group, opened before the spawn.
    procs: Vec<File>,
}

/// This process's path in the v1 hierarchy of `controller`, from `/proc/self/cgroup`.
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// Creates `<mount>/<own path>/<name>` in the hierarchy of `controller`.
fn create(controller: &str, name: &str) -> Option<PathBuf> {
    let mount = Path::new(ROOT).join(controller);
    if !mount.join("cgroup.procs").exists() {
        return None;
    }
    let own = own_path(controller)?;
    let dir = mount.join(own.trim_start_matches('/')).join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir),
        Err(_) => None,
    }
}

/// Whether a group could be created in the hierarchy of `controller`: it is
/// mounted and this process's own group there is writable.
pub(crate) fn can_create(controller: &str) -> bool {
    let mount = Path::new(ROOT).join(controller);
    let Some(own) = own_path(controller) else {
        return false;
    };
    let dir = mount.join(own.trim_start_matches('/'));
    mount.join("cgroup.procs").exists()
        && nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

fn write(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))?
        .write_all(value.as_bytes())
}

/// Keeps a group whose limit was set; removes one whose limit was refused.
fn keep(dir: &Path, ok: bool) -> bool {
    if !ok {
        let _ = std::fs::remove_dir(dir);
    }
    ok
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `key value` lines (as in `memory.oom_control`, `pids.events`): the value of `key`.
pub(crate) fn read_key(dir: &Path, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Groups {
    /// Creates the groups `resources` needs, sets their limits and opens
    /// their `cgroup.procs`. `name` is unique per attempt. `None` when no
    /// group could be created at all.
    pub(crate) fn create(name: &str, r: &Resources) -> Option<Groups> {
        let mut g = Groups {
            memory: None,
            pids: None,
            cpu: None,
            cpuacct: None,
            procs: Vec::new(),
        };
        if let Some(bytes) = r.memory_bytes {
            g.memory = create("memory", name).filter(|dir| {
                let ok = write(dir, "memory.limit_in_bytes", &bytes.to_string()).is_ok();
                // Swap counts too where the kernel accounts it (after the
                // plain limit: memsw may never be below it).
                if ok && dir.join("memory.memsw.limit_in_bytes").exists() {
                    let _ = write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string());
                }
                keep(dir, ok)
            });
        } else {
            // Accounting only (peak memory).
            g.memory = create("memory", name);
        }
        if let Some(max) = r.pids {
            g.pids = create("pids", name)
                .filter(|dir| keep(dir, write(dir, "pids.max", &max.to_string()).is_ok()));
        }
        if let Some(cpus) = r.cpus {
            let quota = ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
            g.cpu = create("cpu", name).filter(|dir| {
                let ok = write(dir, "cpu.cfs_period_us", &CFS_PERIOD_US.to_string()).is_ok()
                    && write(dir, "cpu.cfs_quota_us", &quota.to_string()).is_ok();
                keep(dir, ok)
            });
        }
        g.cpuacct = create("cpuacct", name);
        let dirs: Vec<PathBuf> = g.dirs().cloned().collect();
        for dir in dirs {
            match std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("tasks"))
            {
                Ok(f) => g.procs.push(f),
                Err(_) => {
                    g.remove();
                    return None;
                }
            }
        }
        (!g.procs.is_empty()).then_some(g)
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.memory, &self.pids, &self.cpu, &self.cpuacct]
            .into_iter()
            .flatten()
    }

    /// Whether each limit got its group.
    pub(crate) fn has_memory_limit(&self, r: &Resources) -> bool {
        r.memory_bytes.is_some() && self.memory.is_some()
    }
    pub(crate) fn has_pids(&self) -> bool {
        self.pids.is_some()
    }
    pub(crate) fn has_cpu(&self) -> bool {
        self.cpu.is_some()
    }

    /// The descriptors the child writes `0` into before it executes.
    pub(crate) fn procs_fds(&self) -> Vec<i32> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Peak memory in bytes, from the memory group.
    pub(crate) fn peak_memory(&self) -> Option<u64> {
        let dir = self.memory.as_ref()?;
        read_u64(dir, "memory.memsw.max_usage_in_bytes")
            .filter(|n| *n > 0)
            .or_else(|| read_u64(dir, "memory.max_usage_in_bytes"))
    }

    /// CPU time used, in nanoseconds.
    pub(crate) fn cpu_ns(&self) -> Option<u64> {
        read_u64(self.cpuacct.as_ref()?, "cpuacct.usage")
    }

    /// Whether the kernel's OOM killer killed something in the group, or an
    /// allocation hit the limit.
    pub(crate) fn oom(&self) -> bool {
        let Some(dir) = &self.memory else {
            return false;
        };
        read_key(dir, "memory.oom_control", "oom_kill").unwrap_or(0) > 0
            || read_key(dir, "memory.oom_control", "under_oom").unwrap_or(0) > 0
    }

    /// Whether a fork was refused because the group held `pids.max` tasks.
    pub(crate) fn pids_refused(&self) -> bool {
        self.pids
            .as_ref()
            .is_some_and(|d| read_key(d, "pids.events", "max").unwrap_or(0) > 0)
    }

    /// The pids group's `pids.events` (its `max` counts refused forks).
    pub(crate) fn pids_events(&self) -> Option<PathBuf> {
        self.pids.as_ref().map(|d| d.join("pids.events"))
    }

    /// The pids in the group now (any hierarchy holds them all).
    pub(crate) fn tasks(&self) -> Vec<i32> {
        let Some(dir) = self.dirs().next() else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Removes the (empty) groups.
    pub(crate) fn remove(&mut self) {
        self.procs.clear();
        for dir in [
            self.memory.take(),
            self.pids.take(),
            self.cpu.take(),
            self.cpuacct.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// The groups of run `run` (`dispatch-<run>-<attempt>`) left behind by a
/// helper that was killed: their tasks are killed (waiting at most 2 s for
/// them to go) and the groups removed. Looked for under this process's own
/// group in each hierarchy, as a helper started from here makes them.
pub(crate) fn remove_leftovers(run: &str) {
    let prefix = format!("dispatch-{run}-");
    for controller in ["memory", "pids", "cpu", "cpuacct"] {
        let Some(own) = own_path(controller) else {
            continue;
        };
        let parent = Path::new(ROOT)
            .join(controller)
            .join(own.trim_start_matches('/'));
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let dir = e.path();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::fs::remove_dir(&dir).is_err() && std::time::Instant::now() < deadline {
                let tasks = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in tasks.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // Listed in the run's group: one of the run's processes.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}
