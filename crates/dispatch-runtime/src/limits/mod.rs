//! `RESOURCES` enforced on an agent's process tree.
//!
//! For each attempt that declares limits the runtime creates control groups
//! ([`cgroup_v1`] or [`cgroup_v2`], whichever this machine has: [`groups`])
//! and places the agent in them before it executes; a limit
//! whose group could not be created falls back to an rlimit where one
//! expresses it (`RLIMIT_AS` for memory, `RLIMIT_NPROC` for processes), and
//! is otherwise reported as not applied — in the run log, on the helper's
//! stderr and in the attempt's `resources` event, which `inspect-run` shows.
//! `DISK` is no cgroup matter: `RLIMIT_FSIZE` caps each file and the helper
//! watches the run directory's size ([`disk`]).
//!
//! A run without `RESOURCES` pays nothing here: no group, no `pre_exec` hook
//! (which would cost the spawn its `posix_spawn` fast path), no event. A run
//! with them has its peak memory and CPU time read from its groups, or,
//! without groups, from `getrusage(RUSAGE_CHILDREN)` in a helper that owns
//! one run.
//!
//! `DISPATCH_NO_CGROUPS=1` makes the runtime behave as on a machine without
//! cgroups (the rlimit fallbacks and their statements), for tests and for
//! people who want them.

pub(crate) mod cgroup_v1;
pub(crate) mod cgroup_v2;
pub(crate) mod disk;
pub mod groups;
pub mod machine;
mod usage;

use dispatch_core::isolation::Resources;
use dispatch_core::units::format_size;
use nix::sys::resource::Resource;
use serde::{Deserialize, Serialize};

pub use usage::{AttemptUsage, RusageMark};

/// Turns cgroups off (the rlimit fallbacks apply).
pub const NO_CGROUPS_ENV: &str = "DISPATCH_NO_CGROUPS";

/// How one declared limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    CgroupV1,
    CgroupV2,
    /// The container runtime's limit (`--memory`, `--pids-limit`, `--cpus`).
    Container,
    /// A per-process rlimit: an approximation of the limit (see the note).
    Rlimit,
    /// The helper measures and stops the run when it is crossed.
    Watch,
    NotApplied,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::CgroupV1 => "cgroup v1",
            How::CgroupV2 => "cgroup v2",
            How::Container => "container",
            How::Rlimit => "rlimit",
            How::Watch => "watched",
            How::NotApplied => "NOT APPLIED",
        }
    }
}

/// One declared limit and how it is enforced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// `cpus`, `memory`, `pids` or `disk`.
    pub limit: String,
    /// As declared: `1`, `512M`, `64`, `1G`.
    pub value: String,
    pub how: How,
    /// What an approximation leaves out, or why a limit was not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Applied {
    fn new(limit: &str, value: String, how: How, note: Option<&str>) -> Applied {
        Applied {
            limit: limit.to_string(),
            value,
            how,
            note: note.map(str::to_string),
        }
    }

    /// `memory 512M: cgroup v1`, `pids 64: NOT APPLIED (…)`.
    pub fn line(&self) -> String {
        let note = self
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        format!("{} {}: {}{note}", self.limit, self.value, self.how.as_str())
    }

    /// Whether the limit holds only approximately or not at all.
    pub fn is_weak(&self) -> bool {
        matches!(self.how, How::Rlimit | How::NotApplied)
    }
}

/// An attempt's limits: its groups, its rlimits, and what was applied how.
pub(crate) struct Sandbox {
    groups: Option<groups::Groups>,
    rlimits: Vec<(Resource, u64)>,
    pub applied: Vec<Applied>,
    resources: Resources,
}

pub(crate) fn cgroups_off() -> bool {
    std::env::var_os(NO_CGROUPS_ENV).is_some_and(|v| v != "0")
}

/// Which limits got a control group.
#[derive(Clone, Copy)]
struct Caps {
    /// How a limit with a group holds (`cgroup v1` or `v2`).
    how: How,
    cpu: bool,
    memory: bool,
    pids: bool,
}

/// The limits that would hold only approximately or not at all on this
/// machine, as lines to show when a run is dispatched (nothing is created).
pub fn preview(resources: &Resources) -> Vec<String> {
    if resources.is_empty() {
        return Vec::new();
    }
    let can = |c| !cgroups_off() && groups::can_create(c);
    let caps = Caps {
        how: groups::version().how(),
        cpu: can("cpu"),
        memory: can("memory"),
        pids: can("pids"),
    };
    plan(resources, caps)
        .0
        .iter()
        .filter(|a| a.is_weak())
        .map(|a| format!("RESOURCES {}", a.line()))
        .collect()
}

/// How each declared limit holds, given the groups there are, and the
/// rlimits that stand in for missing ones.
fn plan(r: &Resources, caps: Caps) -> (Vec<Applied>, Vec<(Resource, u64)>) {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let mut rlimits = Vec::new();
    let mut applied = Vec::new();
    if let Some(cpus) = r.cpus {
        applied.push(match caps.cpu {
            true => Applied::new("cpus", cpus_text(cpus), caps.how, None),
            false => Applied::new(
                "cpus",
                cpus_text(cpus),
                How::NotApplied,
                Some("no cpu cgroup could be created, and no rlimit limits a CPU rate"),
            ),
        });
    }
    if let Some(bytes) = r.memory_bytes {
        let value = format_size(bytes);
        applied.push(match caps.memory {
            true => Applied::new("memory", value, caps.how, None),
            false => {
                rlimits.push((Resource::RLIMIT_AS, bytes));
                Applied::new(
                    "memory",
                    value,
                    How::Rlimit,
                    Some(
                        "RLIMIT_AS per process: caps address space, not resident memory, and not the sum over processes",
                    ),
                )
            }
        });
    }
    if let Some(max) = r.pids {
        applied.push(match caps.pids {
            true => Applied::new("pids", max.to_string(), caps.how, None),
            false if !root => {
                rlimits.push((Resource::RLIMIT_NPROC, max));
                Applied::new(
                    "pids",
                    max.to_string(),
                    How::Rlimit,
                    Some("RLIMIT_NPROC: counts every process of this user, not only the run's"),
                )
            }
            false => Applied::new(
                "pids",
                max.to_string(),
                How::NotApplied,
                Some("no pids cgroup could be created, and RLIMIT_NPROC does not bind root"),
            ),
        });
    }
    if let Some(bytes) = r.disk_bytes {
        rlimits.push((Resource::RLIMIT_FSIZE, bytes));
        applied.push(Applied::new(
            "disk",
            format_size(bytes),
            How::Watch,
            Some("run directory size checked every 0.5 s; RLIMIT_FSIZE caps each file"),
        ));
    }
    (applied, rlimits)
}

fn cpus_text(cpus: f64) -> String {
    let s = format!("{cpus}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// How a container's `RESOURCES` hold: the runtime's limits; `DISK` is not
/// applied to containers.
pub fn container_limits(r: &Resources) -> Vec<Applied> {
    let mut out = Vec::new();
    if let Some(cpus) = r.cpus {
        out.push(Applied::new("cpus", cpus_text(cpus), How::Container, None));
    }
    if let Some(bytes) = r.memory_bytes {
        out.push(Applied::new(
            "memory",
            format_size(bytes),
            How::Container,
            None,
        ));
    }
    if let Some(max) = r.pids {
        out.push(Applied::new("pids", max.to_string(), How::Container, None));
    }
    if let Some(bytes) = r.disk_bytes {
        out.push(Applied::new(
            "disk",
            format_size(bytes),
            How::NotApplied,
            Some("no per-container disk quota on this machine"),
        ));
    }
    out
}

/// Kills and removes the control groups a killed helper left for run `run`
/// (called by the reader that reconciles it).
pub fn remove_leftover_groups(run: &dispatch_core::RunId) {
    groups::remove_leftovers(&run.to_string());
    crate::container::usage::remove_leftovers(&run.to_string());
}

impl Sandbox {
    /// Sets up the limits of `resources` for one attempt (`name` is unique
    /// per attempt). `None` when nothing is declared.
    pub(crate) fn prepare(name: &str, resources: &Resources) -> Option<Sandbox> {
        if resources.is_empty() {
            return None;
        }
        let groups = match cgroups_off() {
            true => None,
            false => groups::Groups::create(name, resources),
        };
        let caps = Caps {
            how: groups.as_ref().map_or(How::CgroupV1, |g| g.version().how()),
            cpu: groups.as_ref().is_some_and(|g| g.has_cpu()),
            memory: groups
                .as_ref()
                .is_some_and(|g| g.has_memory_limit(resources)),
            pids: groups.as_ref().is_some_and(|g| g.has_pids()),
        };
        let (applied, rlimits) = plan(resources, caps);
        Some(Sandbox {
            groups,
            rlimits,
            applied,
            resources: resources.clone(),
        })
    }

    /// Makes the child enter the groups and take the rlimits before it
    /// executes.
    pub(crate) fn apply(&self, cmd: &mut tokio::process::Command) {
        let fds = self
            .groups
            .as_ref()
            .map(|g| g.procs_fds())
            .unwrap_or_default();
        enter(cmd, fds, self.rlimits.clone());
    }

    /// [`Sandbox::apply`] for commands spawned later (a native agent's
    /// tools), while this sandbox lives.
    pub(crate) fn hook(&self) -> dispatch_agent::tools::SpawnHook {
        let fds = self
            .groups
            .as_ref()
            .map(|g| g.procs_fds())
            .unwrap_or_default();
        let rlimits = self.rlimits.clone();
        std::sync::Arc::new(move |cmd: &mut tokio::process::Command| {
            enter(cmd, fds.clone(), rlimits.clone())
        })
    }
    /// Whether any control group was created.
    pub(crate) fn has_groups(&self) -> bool {
        self.groups.is_some()
    }

    /// The lines to say when the attempt starts: every limit and how.
    pub(crate) fn summary(&self) -> String {
        let all: Vec<String> = self.applied.iter().map(Applied::line).collect();
        format!("limits: {}", all.join("; "))
    }

    /// Why the attempt failed, when a limit explains it: the OOM killer, a
    /// refused fork, a file over `DISK` (`SIGXFSZ`).
    pub(crate) fn failure_reason(&self, exit_code: i32) -> Option<String> {
        let r = &self.resources;
        let groups = self.groups.as_ref();
        if let (Some(bytes), true) = (r.memory_bytes, groups.is_some_and(|g| g.oom())) {
            return Some(format!("out of memory (limit {})", format_size(bytes)));
        }
        if let (Some(bytes), true) = (r.disk_bytes, exit_code == 128 + libc::SIGXFSZ) {
            return Some(format!(
                "disk limit exceeded (limit {})",
                format_size(bytes)
            ));
        }
        if let (Some(max), true) = (r.pids, self.pids_refused()) {
            return Some(format!("process limit reached (limit {max})"));
        }
        None
    }

    /// Whether a fork was refused by the pids limit.
    pub(crate) fn pids_refused(&self) -> bool {
        self.groups.as_ref().is_some_and(|g| g.pids_refused())
    }

    /// What the attempt used, from its groups (`None` without groups).
    pub(crate) fn usage(&self) -> Option<AttemptUsage> {
        let g = self.groups.as_ref()?;
        Some(AttemptUsage {
            peak_memory_bytes: g.peak_memory(),
            cpu_time_ms: g.cpu_ns().map(|ns| ns / 1_000_000),
            measured_by: g.version().how().as_str().to_string(),
        })
    }

    /// What the helper checks on its watch tick: the run directory against
    /// `DISK` (`dir`), and refused forks against `PIDS`.
    pub(crate) fn watch(&self, dir: std::path::PathBuf) -> LimitWatch {
        LimitWatch {
            disk: self
                .resources
                .disk_bytes
                .map(|limit| (disk::DiskWatch::new(dir, limit), limit)),
            pids: self
                .groups
                .as_ref()
                .and_then(|g| g.pids_events())
                .zip(self.resources.pids),
        }
    }

    /// Kills every process left in the groups (not only the agent's process
    /// group: a descendant may have left it), waiting at most 5 s for them
    /// to go.
    pub(crate) fn finish_tasks(&self) {
        let Some(g) = self.groups.as_ref() else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let tasks = g.tasks();
            if tasks.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for pid in tasks {
                // A pid listed in the group is one of the run's processes:
                // it stays in the group until it exits.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Kills what is left in the groups and removes them.
    pub(crate) fn finish(&mut self) {
        self.finish_tasks();
        if let Some(mut g) = self.groups.take() {
            g.remove();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Limits checked while the agent runs; a crossed one stops the run.
pub(crate) struct LimitWatch {
    disk: Option<(disk::DiskWatch, u64)>,
    /// `pids.events` and the limit.
    pids: Option<(std::path::PathBuf, u64)>,
}

impl LimitWatch {
    /// The reason to stop the run, when a limit was crossed. A fork refused
    /// by `PIDS` stops it: the run asked to be contained, and an agent that
    /// runs into its process limit is most likely forking without end.
    pub(crate) fn check(&mut self, now: std::time::Instant) -> Option<String> {
        if let Some((disk, limit)) = &mut self.disk
            && disk.over(now)
        {
            return Some(format!(
                "disk limit exceeded (limit {})",
                format_size(*limit)
            ));
        }
        if let Some((events, max)) = &self.pids {
            let text = std::fs::read_to_string(events).unwrap_or_default();
            let refused = text
                .lines()
                .filter_map(|l| l.strip_prefix("max "))
                .any(|n| n.trim().parse::<u64>().unwrap_or(0) > 0);
            if refused {
                return Some(format!("process limit reached (limit {max})"));
            }
        }
        None
    }
}

/// Registers the `pre_exec` hook that writes `0` ("this process") into each
/// group's `cgroup.procs` descriptor and sets each rlimit.
fn enter(cmd: &mut tokio::process::Command, fds: Vec<i32>, rlimits: Vec<(Resource, u64)>) {
    // SAFETY: the hook runs between fork and exec in the child; it only
    // calls write(2) and setrlimit(2), which are async-signal-safe, and
    // allocates nothing (both vectors were built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (resource, value) in &rlimits {
                nix::sys::resource::setrlimit(*resource, *value, *value)
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}
