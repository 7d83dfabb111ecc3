//! Containment: every process started for a run — a process agent, a
//! native agent's LOCAL tools and MCP servers — lives in a control group
//! named after the run (`dispatch/<run-id>`, see [`cgroup`] for where, on
//! cgroup v1 and v2), and dies with it as a unit: a process that left the
//! agent's process group (`setsid`, a daemon's double fork) is still in the
//! group.
//!
//! - The spawned process enters the group before it executes (a `pre_exec`
//!   write of `0`, registered before any other hook: a sandboxed agent's
//!   namespaces are made inside the group, and on v2 a `RESOURCES` group
//!   entered after it takes over, see [`cgroup`]). It also gets a
//!   parent-death signal: SIGKILL when the thread of its supervisor that
//!   started it ends.
//! - Without a PID namespace, the spawned process is a keeper tethered to
//!   the supervisor, which forks the program and kills the whole group when
//!   the supervisor dies or a frozen worker's lease deadline passes (see
//!   `crate::sandbox`'s `keeper`); the program's parent-death signal is
//!   then tied to the keeper. A sandboxed run's PID namespace has its own
//!   tether.
//! - At the end of each attempt, and when the attempt is dropped in any
//!   other way, whatever is left in the group is killed and the group
//!   removed ([`Tree`]).
//! - The group's path is recorded in `runs/<id>.cgroup` (outside the run's
//!   directory, which a sandboxed agent can write): recovery — a reader
//!   reconciling a run whose helper died, a worker starting on a root —
//!   kills what is left in it before it unmounts the run's workspace or
//!   runs it again ([`kill_leftovers`]). A recorded path is used only if it
//!   names this run's group.
//!
//! Without a writable cgroup (not root, no delegated subtree, or
//! `DISPATCH_NO_CGROUPS=1`) there is no group: the run's sandbox line says
//! so, the agent's process group and parent-death signal are what holds,
//! and recovery finds leftover processes by their environment or root
//! directory instead ([`scan`]). A sandboxed run with a PID namespace is
//! contained by it either way (its init dies, every process of it dies: see
//! `crate::sandbox`'s tether).

mod cgroup;
mod scan;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use dispatch_core::RunId;

use crate::layout::Layout;

/// The containment of one attempt's processes: its group, or why it has
/// none. Dropping it kills what is left in the group and removes it.
pub struct Tree {
    group: Result<Group, String>,
}

struct Group {
    dir: PathBuf,
    /// The file a process writes `0` into to enter the group, opened
    /// before any spawn.
    entry: File,
    /// `runs/<id>.cgroup`.
    record: PathBuf,
}

/// Where the path of run `id`'s group is recorded.
fn record_of(layout: &Layout, id: &RunId) -> PathBuf {
    layout.runs().join(format!("{id}.cgroup"))
}

impl Tree {
    /// Makes the group of run `id`'s processes (a group left there by a
    /// previous process is emptied first).
    pub fn create(layout: &Layout, id: &RunId) -> Arc<Tree> {
        let group = match crate::limits::cgroups_off() {
            true => Err(format!("{}=1", crate::limits::NO_CGROUPS_ENV)),
            false => Group::create(layout, id),
        };
        Arc::new(Tree { group })
    }

    /// No group, and why (a run with nothing to contain, in tests).
    pub fn none(why: &str) -> Arc<Tree> {
        Arc::new(Tree {
            group: Err(why.to_string()),
        })
    }

    /// What the run's sandbox line says: `Ok("contained (cgroup v1
    /// freezer)")`, or why the tree is not contained.
    pub fn statement(&self) -> Result<String, String> {
        match &self.group {
            Ok(_) => Ok(format!("contained ({})", cgroup::kind())),
            Err(why) => Err(format!(
                "containment: no cgroup ({why}): a process that leaves the agent's process group outlives a killed supervisor until recovery finds it"
            )),
        }
    }

    /// Makes `cmd`'s process enter the group and die with the thread that
    /// spawns it, before it executes. Register it before any other hook.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let fd = self.group.as_ref().ok().map(|g| g.entry.as_raw_fd());
        // SAFETY: the hook runs between fork and exec in the child and
        // makes only async-signal-safe system calls (write(2), prctl(2))
        // on a descriptor opened before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = fd
                    && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
                {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
    }

    /// [`Tree::apply`] for commands spawned later (LOCAL tools, MCP servers).
    pub fn hook(self: &Arc<Self>) -> dispatch_agent::tools::SpawnHook {
        let tree = Arc::clone(self);
        Arc::new(move |cmd: &mut tokio::process::Command| tree.apply(cmd))
    }

    /// Kills every process left in the group (the attempt ended, or was
    /// stopped); returns how many were signalled. The group stays until the
    /// tree is dropped.
    pub fn kill(&self) -> usize {
        match &self.group {
            Ok(g) => cgroup::kill_all(&g.dir),
            Err(_) => 0,
        }
    }

    /// The descriptor [`Tree::apply`] writes into, when there is a group
    /// (a stage process receives it, see `crate::sandbox`'s `stage`).
    pub(crate) fn entry_fd(&self) -> Option<std::os::fd::RawFd> {
        self.group.as_ref().ok().map(|g| g.entry.as_raw_fd())
    }

    /// The group's directory, when there is one.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.group.as_ref().ok().map(|g| g.dir.as_path())
    }

    /// The processes in the group now.
    pub fn pids(&self) -> Vec<i32> {
        match &self.group {
            Ok(g) => cgroup::procs(&g.dir),
            Err(_) => Vec::new(),
        }
    }
}

impl Group {
    fn create(layout: &Layout, id: &RunId) -> Result<Group, String> {
        let run = id.to_string();
        let dir = cgroup::create(&run)?;
        let entry_file = cgroup::entry_file(&dir);
        let entry = match std::fs::OpenOptions::new().write(true).open(&entry_file) {
            Ok(f) => f,
            Err(e) => {
                cgroup::remove(&dir);
                return Err(format!("cannot open {}: {e}", entry_file.display()));
            }
        };
        let record = record_of(layout, id);
        if let Some(parent) = record.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(&record, dir.as_os_str().as_encoded_bytes()) {
            // Unrecorded, recovery could look only where this process
            // would make it: refuse the group rather than half of it.
            cgroup::remove(&dir);
            return Err(format!("cannot record it in {}: {e}", record.display()));
        }
        Ok(Group { dir, entry, record })
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if let Ok(g) = &self.group {
            cgroup::kill_all(&g.dir);
            cgroup::remove(&g.dir);
            // A later tree of the run may have recorded its own group.
            let ours =
                std::fs::read(&g.record).is_ok_and(|r| r == g.dir.as_os_str().as_encoded_bytes());
            if ours {
                let _ = std::fs::remove_file(&g.record);
            }
        }
    }
}

/// Kills what run `id`'s processes left behind, before anything of the
/// run is reclaimed (its workspace unmounted, the run started again): its
/// recorded group (and one an older version made at `dispatch/<run>`), or,
/// without one,
/// the processes [`scan`] finds when there is no group. Returns how many processes were signalled.
/// Call it only once the run's supervisor is known to be gone.
pub fn kill_leftovers(layout: &Layout, id: &RunId) -> usize {
    match kill_groups(layout, id) {
        Some(killed) => killed,
        None => scan::kill_found(&id.to_string(), &layout.run_dir(id)),
    }
}

/// [`kill_leftovers`] for a run that ended, whose files are being removed
/// (`rm`, `prune`, retention): its group only, if one was left (no scan of
/// `/proc` for each removed run).
pub fn remove_recorded(layout: &Layout, id: &RunId) {
    kill_groups(layout, id);
}

/// Kills and removes run `id`'s groups (the recorded one and the one an
/// older version made), and forgets the record; `None` when there was no
/// group.
fn kill_groups(layout: &Layout, id: &RunId) -> Option<usize> {
    let run = id.to_string();
    let record = record_of(layout, id);
    let mut dirs = Vec::new();
    if let Ok(text) = std::fs::read_to_string(&record) {
        let dir = PathBuf::from(text.trim());
        if cgroup::is_run_group(&dir, &run) {
            dirs.push(dir);
        }
    }
    if let Some(dir) = cgroup::legacy_dir_for(&run).filter(|d| !dirs.contains(d)) {
        dirs.push(dir);
    }
    let mut killed = None;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        *killed.get_or_insert(0) += cgroup::kill_all(dir);
        cgroup::remove(dir);
    }
    let _ = std::fs::remove_file(&record);
    killed
}

/// The runs whose group is recorded under `layout` (their supervisor
/// ended without removing it, or is running): a starting worker kills the
/// trees of those no live worker holds ([`kill_leftovers`]).
pub fn recorded(layout: &Layout) -> Vec<RunId> {
    let Ok(entries) = std::fs::read_dir(layout.runs()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".cgroup")?.parse().ok()
        })
        .collect()
}
