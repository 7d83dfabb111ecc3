//! Control groups, version 2 (the unified hierarchy at `/sys/fs/cgroup`):
//! one group per attempt, `dispatch-<run>-<attempt>`, under this process's
//! own group (`0::<path>` in `/proc/self/cgroup`), with `memory.max` (and
//! `memory.swap.max` 0, as v1's `memsw`), `pids.max` and `cpu.max`.
//!
//! The parent must hand the controllers down: the runtime writes
//! `+memory +pids +cpu` into its own group's `cgroup.subtree_control` when
//! they are not there yet. The kernel refuses that in a group that holds
//! processes (other than the root group): give the runtime a delegated
//! subtree whose controllers are enabled, or run it in the root group.
//! When it is refused, no group is made and the limits fall back as on a
//! machine without cgroups (said plainly).
//!
//! The child enters its group before it executes, like v1 (see
//! [`super::cgroup_v1`]): it writes `0` into the group's `cgroup.procs`,
//! opened before the spawn. Peak memory is `memory.peak` (Linux 5.19+),
//! CPU time `usage_usec` of `cpu.stat`.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use dispatch_core::isolation::Resources;

use super::cgroup_v1::read_key;

const ROOT: &str = "/sys/fs/cgroup";
/// The CPU period the quota is expressed in (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// Whether `/sys/fs/cgroup` is the unified hierarchy (not v1 or hybrid).
pub(crate) fn unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").is_file()
}

/// This process's group, from the `0::<path>` line of `/proc/self/cgroup`.
fn own_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(ROOT).join(path.trim().trim_start_matches('/')))
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Whether a group with `controller` could be made: it is available in
/// this process's group, which is writable.
pub(crate) fn can_create(controller: &str) -> bool {
    let Some(own) = own_dir() else {
        return false;
    };
    unified()
        && words(&own.join("cgroup.controllers"))
            .iter()
            .any(|c| c == controller)
        && nix::unistd::access(&own, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Makes `wanted` controllers available to the children of `own`; returns
/// those that are.
fn hand_down(own: &Path, wanted: &[&str]) -> Vec<String> {
    let file = own.join("cgroup.subtree_control");
    let mut on = words(&file);
    let available = words(&own.join("cgroup.controllers"));
    for c in wanted {
        if on.iter().any(|o| o == c) || !available.iter().any(|a| a == c) {
            continue;
        }
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|mut f| f.write_all(format!("+{c}").as_bytes()))
            .is_ok();
        if ok {
            on.push(c.to_string());
        }
    }
    on
}

fn write(dir: &Path, file: &str, value: &str) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .is_ok()
}

/// The group of one attempt.
pub(crate) struct Groups {
    dir: PathBuf,
    memory: bool,
    pids: bool,
    cpu: bool,
    /// `cgroup.procs`, opened before the spawn.
    procs: File,
}

impl Groups {
    /// Creates the attempt's group (`name`) with the limits of `r`. `None`
    /// when no group could be made.
    pub(crate) fn create(name: &str, r: &Resources) -> Option<Groups> {
        let own = own_dir()?;
        let mut wanted = vec!["memory"];
        if r.pids.is_some() {
            wanted.push("pids");
        }
        if r.cpus.is_some() {
            wanted.push("cpu");
        }
        let on = hand_down(&own, &wanted);
        let has = |c: &str| on.iter().any(|o| o == c);
        let dir = own.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        let memory = match r.memory_bytes {
            Some(bytes) if has("memory") => {
                let ok = write(&dir, "memory.max", &bytes.to_string());
                // Swap counts too, as v1's memsw (absent without swap accounting).
                let _ = write(&dir, "memory.swap.max", "0");
                ok
            }
            _ => false,
        };
        let pids = match r.pids {
            Some(max) if has("pids") => write(&dir, "pids.max", &max.to_string()),
            _ => false,
        };
        let cpu = match r.cpus {
            Some(cpus) if has("cpu") => {
                let quota = ((cpus * PERIOD_US as f64).round() as u64).max(1000);
                write(&dir, "cpu.max", &format!("{quota} {PERIOD_US}"))
            }
            _ => false,
        };
        let procs = match std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(f) => f,
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
        };
        Some(Groups {
            dir,
            memory,
            pids,
            cpu,
            procs,
        })
    }

    pub(crate) fn has_memory_limit(&self, r: &Resources) -> bool {
        r.memory_bytes.is_some() && self.memory
    }
    pub(crate) fn has_pids(&self) -> bool {
        self.pids
    }
    pub(crate) fn has_cpu(&self) -> bool {
        self.cpu
    }

    pub(crate) fn procs_fds(&self) -> Vec<i32> {
        vec![self.procs.as_raw_fd()]
    }

    /// Peak memory in bytes (`memory.peak`, Linux 5.19+).
    pub(crate) fn peak_memory(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join("memory.peak"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// CPU time used, in nanoseconds.
    pub(crate) fn cpu_ns(&self) -> Option<u64> {
        read_key(&self.dir, "cpu.stat", "usage_usec").map(|us| us * 1000)
    }

    pub(crate) fn oom(&self) -> bool {
        read_key(&self.dir, "memory.events", "oom_kill").unwrap_or(0) > 0
            || read_key(&self.dir, "memory.events", "oom").unwrap_or(0) > 0
    }

    pub(crate) fn pids_refused(&self) -> bool {
        self.pids && read_key(&self.dir, "pids.events", "max").unwrap_or(0) > 0
    }

    pub(crate) fn pids_events(&self) -> Option<PathBuf> {
        self.pids.then(|| self.dir.join("pids.events"))
    }

    pub(crate) fn tasks(&self) -> Vec<i32> {
        tasks_of(&self.dir)
    }

    pub(crate) fn remove(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn tasks_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The groups of run `run` a killed helper left behind: their tasks are
/// killed (`cgroup.kill`, else one by one) and the groups removed.
pub(crate) fn remove_leftovers(run: &str) {
    let Some(own) = own_dir().filter(|_| unified()) else {
        return;
    };
    let prefix = format!("dispatch-{run}-");
    let Ok(entries) = std::fs::read_dir(&own) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let dir = e.path();
        let _ = write(&dir, "cgroup.kill", "1");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::fs::remove_dir(&dir).is_err() && std::time::Instant::now() < deadline {
            for pid in tasks_of(&dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
