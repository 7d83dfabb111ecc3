//! The sandbox of a process agent, its LOCAL tools and MCP servers.
//!
//! An agent runs untrusted model output. As root (the default on the
//! machines Dispatch runs on), every process started for a run:
//!
//! - runs as an unprivileged user (`DISPATCH_SANDBOX_UID`, default
//!   `nobody`, 65534; group `DISPATCH_SANDBOX_GID`, default 65534), with no
//!   capabilities in any set (bounding and ambient too) and `no_new_privs`
//!   (no set-uid program or file capability gives any back);
//! - sees its own filesystem view, built in its own mount namespace
//!   ([`child`]): the host's system directories read-only (`/usr`, `/bin`,
//!   `/lib*`, `/etc`, `/opt`, `/sys`), `/dev`, a private `/tmp` and
//!   `/dev/shm`, its run directory (workspace, `HOME`, `TMPDIR`, events,
//!   output, artifacts) and its parcel's state directory writable, and its
//!   brief and parcel read-only — each at the path the agent protocol names.
//!   Nothing else of `.dispatch/` (the database, the parcels store, other
//!   runs) nor of the host's other directories is there; the overlay's upper
//!   layer is hidden;
//! - is in its own PID namespace (it sees only its own processes: no other
//!   run's `/proc/<pid>/environ`) and IPC namespace. Mounts it could make
//!   (it cannot: no `CAP_SYS_ADMIN`) would die with the namespace.
//!
//! The files the run owns (its run directory's top, workspace, `HOME`,
//! `TMPDIR`, artifacts, the state directory) are given to the sandbox's
//! user before the agent starts ([`owner`]). A process that is not root
//! changes no user ([`unprivileged`]): it builds the same view in a user
//! namespace of its own uid where the kernel lets it, else confines the
//! agent's files with Landlock; either way with `no_new_privs`, and the run
//! says which.
//!
//! Each attempt says in one line which protections applied (the run's log
//! and a `sandbox` event, which `inspect-run` shows). `DISPATCH_SANDBOX=off`
//! in the environment a run executes in turns the sandbox off (agents then
//! run as the helper's user, having lost only the powers to write into
//! parcels, see `dispatch_agent::tools::powers`); their processes are still
//! contained, in the run's group and by a [`keeper`] (see
//! [`crate::contain`]), which the line says too. The container courier
//! is its own isolation and is not sandboxed here.

mod child;
mod keeper;
mod netns;
pub(crate) mod owner;
mod shared_vm;
pub mod spawner;
pub mod stage;
mod tether;
mod unprivileged;
mod wire;

pub use tether::{hold_leases, lease_renewed};

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// `off` (or `0`, `false`, `no`) turns the sandbox off.
pub const SANDBOX_ENV: &str = "DISPATCH_SANDBOX";
/// The user agents run as (default 65534).
pub const SANDBOX_UID_ENV: &str = "DISPATCH_SANDBOX_UID";
/// Their group (default 65534).
pub const SANDBOX_GID_ENV: &str = "DISPATCH_SANDBOX_GID";
/// `off`: without root, use Landlock instead of a user namespace.
pub const SANDBOX_USERNS_ENV: &str = "DISPATCH_SANDBOX_USERNS";
const NOBODY: u32 = 65534;

/// The host's directories every agent sees read-only, when they exist (a
/// symlink, such as `/bin` → `usr/bin`, is made as the same symlink).
const SYSTEM_DIRS: [&str; 10] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys",
];

/// What this process would do for the runs it executes.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub on: bool,
    pub uid: u32,
    pub gid: u32,
    /// Without root: try a user namespace before Landlock.
    pub userns: bool,
}

impl Settings {
    /// From the environment the run executes in.
    pub fn from_env() -> Settings {
        let id = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|&id| id != 0)
                .unwrap_or(NOBODY)
        };
        let off = |name: &str| {
            std::env::var(name).is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "off" | "0" | "false" | "no"
                )
            })
        };
        Settings {
            on: !off(SANDBOX_ENV),
            uid: id(SANDBOX_UID_ENV),
            gid: id(SANDBOX_GID_ENV),
            userns: !off(SANDBOX_USERNS_ENV),
        }
    }

    /// Who should own the run's files: the sandbox's user, when agents
    /// change to it (root, sandbox on).
    pub fn owner(&self) -> Option<(u32, u32)> {
        (self.on && is_root()).then_some((self.uid, self.gid))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The paths of one run an agent works with.
pub struct RunPaths<'a> {
    /// The run's id (its tether follows its lease by it).
    pub run: &'a str,
    /// `runs/<id>/`: writable (workspace, home, tmp, events, output, …).
    pub run_dir: &'a Path,
    /// The brief's file: read-only.
    pub brief: &'a Path,
    /// The parcel's files: read-only.
    pub parcel: &'a Path,
    /// Writable directories besides the run's (the parcel's state, a
    /// session's directory).
    pub shared: Vec<&'a Path>,
    /// The working directory.
    pub cwd: &'a Path,
}

/// Which protections an attempt's processes got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `no capabilities`, `no_new_privs`, `mount ns`, `pid ns`, …
    pub protections: Vec<String>,
    /// What did not apply, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl Applied {
    /// `sandbox: uid 65534, no capabilities, no_new_privs, mount ns, pid ns`.
    /// Off: `sandbox: off (DISPATCH_SANDBOX=off); contained (cgroup v1
    /// freezer)`.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self.uid.map(|u| format!("uid {u}")).into_iter().collect();
        parts.extend(self.protections.iter().cloned());
        let mut line = match self.on {
            true => format!("sandbox: {}", parts.join(", ")),
            false if parts.is_empty() => format!("sandbox: off ({SANDBOX_ENV}=off)"),
            false => format!("sandbox: off ({SANDBOX_ENV}=off); {}", parts.join(", ")),
        };
        if !self.missing.is_empty() {
            line.push_str(&format!("; NOT APPLIED: {}", self.missing.join("; ")));
        }
        line
    }
}

/// One attempt's sandbox: what its processes do before they execute.
#[derive(Clone)]
pub struct Plan {
    steps: Option<Arc<child::Steps>>,
    /// The group the attempt's processes live and die in (see
    /// [`crate::contain`]).
    tree: Option<Arc<crate::contain::Tree>>,
    /// Without a PID namespace: what kills the tree when its supervisor
    /// dies (see [`keeper`]).
    keeper: Option<Arc<keeper::Keeper>>,
    pub applied: Applied,
}

impl Plan {
    /// The sandbox for a run's processes under `settings`.
    pub fn prepare(settings: Settings, paths: &RunPaths<'_>) -> Plan {
        if !settings.on {
            return Plan::off();
        }
        if !is_root() {
            return Plan::unprivileged(settings, paths);
        }
        let view = view(paths);
        let mut protections: Vec<String> = ["no capabilities", "no_new_privs"]
            .map(String::from)
            .to_vec();
        let mut missing = Vec::new();
        match &view {
            Ok(_) => protections.extend(["mount ns", "pid ns", "ipc ns"].map(String::from)),
            Err(why) => missing.push(format!("mount and pid namespaces: {why}")),
        }
        let tether = view.as_ref().ok().map(|_| tie(paths.run, &mut protections));
        Plan {
            tree: None,
            keeper: None,
            steps: Some(Arc::new(child::Steps {
                uid: settings.uid,
                gid: settings.gid,
                view: view.ok(),
                userns: None,
                landlock: None,
                tether,
                netns: None,
            })),
            applied: Applied {
                on: true,
                uid: Some(settings.uid),
                protections,
                missing,
            },
        }
    }

    /// Not root: the view in a user namespace of this user, else Landlock,
    /// else only `no_new_privs`.
    fn unprivileged(settings: Settings, paths: &RunPaths<'_>) -> Plan {
        // SAFETY: getuid(2)/getgid(2) take no arguments and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut missing = Vec::new();
        let userns = match settings.userns {
            true => unprivileged::userns_works(),
            false => Err(format!("user namespace: {SANDBOX_USERNS_ENV}=off")),
        };
        let view = userns.and_then(|()| view(paths));
        let (view, landlock, protections) = match view {
            Ok(view) => {
                let p = [
                    "user ns",
                    "no capabilities",
                    "no_new_privs",
                    "mount ns",
                    "pid ns",
                    "ipc ns",
                ];
                (Some(view), None, p.map(String::from).to_vec())
            }
            Err(why) => {
                missing.push(why);
                let mut p = vec!["no_new_privs".to_string()];
                let ruleset = match unprivileged::landlock(paths) {
                    Ok((fd, applied)) => {
                        p.extend(applied);
                        Some(fd)
                    }
                    Err(why) => {
                        missing.push(format!(
                            "{why}: agents can read and write whatever this user can"
                        ));
                        None
                    }
                };
                missing.push("pid ns: agents see this user's processes".into());
                (None, ruleset, p)
            }
        };
        let userns = view.as_ref().map(|_| child::UserMaps {
            uid_map: map_line(uid),
            gid_map: map_line(gid),
        });
        let mut protections = protections;
        let tether = view.as_ref().map(|_| tie(paths.run, &mut protections));
        Plan {
            tree: None,
            keeper: None,
            steps: Some(Arc::new(child::Steps {
                uid,
                gid,
                view,
                userns,
                landlock,
                tether,
                netns: None,
            })),
            applied: Applied {
                on: true,
                uid: Some(uid),
                protections,
                missing,
            },
        }
    }

    /// `NETWORK allow`: the attempt's processes join a network namespace
    /// of their own holding only loopback (see [`netns`]), where the
    /// returned listener is the egress proxy's. An error (the sandbox off,
    /// not root, the kernel refusing) is why the run cannot start: it
    /// never runs unfiltered.
    pub fn isolate_network(&mut self) -> Result<std::net::TcpListener, String> {
        const WHAT: &str = "NETWORK allow needs a network namespace for the run's processes";
        let Some(steps) = self.steps.as_mut() else {
            return Err(format!(
                "{WHAT}, which the sandbox makes, and the sandbox is off here ({SANDBOX_ENV}=off) (hint: run it without {SANDBOX_ENV}=off, as root)"
            ));
        };
        if !is_root() || steps.userns.is_some() {
            // SAFETY: geteuid(2) takes no arguments and cannot fail.
            let uid = unsafe { libc::geteuid() };
            return Err(format!(
                "{WHAT}, which only root can make, and this process runs as uid {uid} (hint: run the helper or worker as root)"
            ));
        }
        let steps =
            Arc::get_mut(steps).ok_or_else(|| format!("{WHAT}: the plan is shared already"))?;
        let (ns, listener) =
            netns::create().map_err(|e| format!("{WHAT}, and the kernel refused one: {e}"))?;
        steps.netns = Some(ns);
        self.applied
            .protections
            .push("net ns (egress through the NETWORK allow proxy)".into());
        Ok(listener)
    }

    /// The sandbox off.
    pub fn off() -> Plan {
        Plan {
            steps: None,
            tree: None,
            keeper: None,
            applied: Applied::default(),
        }
    }

    /// The plan with its processes contained in `tree`, which its line
    /// then states (or why they are not).
    /// Without a PID namespace, a keeper tethered to this process kills
    /// the group when this process dies (`tethered`, as a sandboxed run).
    pub fn contained(mut self, tree: Arc<crate::contain::Tree>, run: &str) -> Plan {
        match tree.statement() {
            Ok(said) => self.applied.protections.push(said),
            Err(why) => self.applied.missing.push(why),
        }
        let pid_ns = self
            .steps
            .as_ref()
            .is_some_and(|s| s.view.as_ref().is_some_and(|v| v.pid_ns));
        if let (Some(dir), false) = (tree.dir(), pid_ns) {
            match tether::Tether::new(run).and_then(|t| keeper::Keeper::new(t, dir)) {
                Ok(k) => {
                    self.keeper = Some(Arc::new(k));
                    self.applied.protections.push("tethered".into());
                }
                Err(e) => self.applied.missing.push(format!("tether: {e}")),
            }
        }
        self.tree = Some(tree);
        self
    }

    /// When the tree is killed by its keeper (its supervisor died, or a
    /// frozen worker's lease deadline passed), the keeper then starts
    /// `argv` with `env`: what removes the part of the run that lives
    /// outside the tree (a container). Call it before the spawn; nothing
    /// happens without a keeper (a sandboxed run has none; the container
    /// courier is not sandboxed).
    pub fn after_kill(&self, argv: &[String], env: &[(String, String)]) -> std::io::Result<()> {
        match &self.keeper {
            Some(k) => k.after_kill(argv, env),
            None => Ok(()),
        }
    }

    /// The attempt's containment, when it has one.
    pub fn tree(&self) -> Option<&Arc<crate::contain::Tree>> {
        self.tree.as_ref()
    }

    /// Makes `cmd`'s process enter the attempt's group (and die with its
    /// supervisor). Call it before every other `pre_exec` hook: a
    /// `RESOURCES` group on cgroup v2 is entered after it, and the
    /// sandbox's namespaces are made inside it.
    pub fn contain(&self, cmd: &mut tokio::process::Command) {
        contain(self.tree.as_ref(), self.keeper.as_ref(), cmd);
    }

    /// Makes `cmd`'s process enter the sandbox before it executes. Call it
    /// after every other `pre_exec` hook (limits, a parent-death signal):
    /// they act on the spawned process, which this one replaces.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let Some(steps) = self.steps.clone() else {
            return;
        };
        // The child reads the tether after the fork: made now, for the
        // attempt's life (these processes are its agent and MCP servers).
        if let Some(Err(e)) = steps.tether.as_ref().map(|t| t.pin()) {
            let errno = e.raw_os_error().unwrap_or(libc::EMFILE);
            // SAFETY: returns an error, nothing else.
            unsafe {
                cmd.pre_exec(move || Err(std::io::Error::from_raw_os_error(errno)));
            }
            return;
        }
        // SAFETY: the hook runs between fork and exec in the child and
        // does only what `child::enter` documents: async-signal-safe
        // system calls on data made before the fork, no allocation.
        unsafe {
            cmd.pre_exec(move || child::enter(&steps, None));
        }
    }

    /// [`Plan::apply`] for a command whose program, arguments and whole
    /// environment the caller states: `cmd`'s own (`Command::env_clear`
    /// then these). With a view, the sandbox's processes then share the
    /// spawned one's memory instead of copying it, and the last executes
    /// `program` itself (see [`shared_vm`]).
    pub fn apply_exec<'a>(
        &self,
        cmd: &mut tokio::process::Command,
        program: &std::ffi::OsStr,
        args: impl IntoIterator<Item = &'a std::ffi::OsStr>,
        env: impl IntoIterator<Item = (&'a std::ffi::OsStr, &'a std::ffi::OsStr)>,
    ) -> std::io::Result<()> {
        let Some(steps) = self.steps.clone() else {
            return Ok(());
        };
        if steps.view.is_none() {
            self.apply(cmd);
            return Ok(());
        }
        let exec = shared_vm::Exec::new(program, args, env)?;
        if let Some(t) = &steps.tether {
            t.pin()?;
        }
        // SAFETY: as in `apply`; `exec` was made here, before the fork.
        unsafe {
            cmd.pre_exec(move || child::enter(&steps, Some(&exec)));
        }
        Ok(())
    }

    /// The plan without what it says it applied (only the run's record
    /// reads that): what a hook or launcher keeps for the run's life.
    fn working_copy(&self) -> Plan {
        Plan {
            steps: self.steps.clone(),
            tree: self.tree.clone(),
            keeper: self.keeper.clone(),
            applied: Applied::default(),
        }
    }

    /// [`Plan::apply`] as a hook for commands spawned later (a native
    /// agent's LOCAL tools and MCP servers).
    pub fn hook(&self) -> Option<dispatch_agent::tools::SpawnHook> {
        self.steps.as_ref()?;
        // The hook only enters the sandbox; the tree is entered first,
        // through its own hook ([`Plan::contain_hook`]).
        let plan = Plan {
            steps: self.steps.clone(),
            tree: None,
            keeper: None,
            applied: Applied::default(),
        };
        Some(Arc::new(move |cmd: &mut tokio::process::Command| {
            plan.apply(cmd)
        }))
    }
}

impl Plan {
    /// Starts a native agent's LOCAL tools through a stage (see
    /// [`stage`]): the same steps as [`Plan::contain_hook`] then
    /// [`Plan::hook`], from a small process. `None` where this binary has
    /// no stage or it is turned off.
    pub fn launcher(&self) -> Option<dispatch_agent::tools::launch::Launcher> {
        if !stage::enabled() {
            return None;
        }
        let plan = self.working_copy();
        Some(Arc::new(move |req| stage::launch(&plan, req)))
    }

    /// [`Plan::contain`] for commands spawned later (LOCAL tools, MCP
    /// servers).
    pub fn contain_hook(&self) -> Option<dispatch_agent::tools::SpawnHook> {
        let tree = self.tree.clone()?;
        let keeper = self.keeper.clone();
        Some(Arc::new(move |cmd: &mut tokio::process::Command| {
            contain(Some(&tree), keeper.as_ref(), cmd)
        }))
    }
}

/// Enters `tree`'s group, then its keeper's fork (see [`Plan::contain`]).
fn contain(
    tree: Option<&Arc<crate::contain::Tree>>,
    keeper: Option<&Arc<keeper::Keeper>>,
    cmd: &mut tokio::process::Command,
) {
    let Some(tree) = tree else {
        return;
    };
    tree.apply(cmd);
    if let Some(keeper) = keeper.cloned() {
        // SAFETY: the hook runs between fork and exec in the child and
        // does only what `keeper` documents: async-signal-safe system
        // calls on descriptors and paths made before the fork.
        unsafe {
            cmd.pre_exec(move || keeper.enter());
        }
    }
}

/// The tether of `run`'s processes (see [`tether`]), said as `tethered`:
/// made when each process starts (a failure to make it fails the spawn).
fn tie(run: &str, protections: &mut Vec<String>) -> tether::Tie {
    protections.push("tethered".into());
    tether::Tie::lazy(run)
}

/// `"<id> <id> 1"`: an id mapped to itself, alone.
fn map_line(id: u32) -> CString {
    CString::new(format!("{id} {id} 1")).unwrap_or_default()
}

/// The host's system directories as the view shows them (read once per
/// process: they do not change under a running helper or worker).
fn system_dirs() -> &'static [(PathBuf, Option<PathBuf>)] {
    static SYSTEM: OnceLock<Vec<(PathBuf, Option<PathBuf>)>> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let mut out = Vec::new();
        for dir in SYSTEM_DIRS.iter().chain(&["/dev"]) {
            let path = PathBuf::from(dir);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&path) {
                        out.push((path, Some(target)));
                    }
                }
                Ok(m) if m.is_dir() => out.push((path, None)),
                _ => {}
            }
        }
        out
    })
}

fn cstring(prefix: &str, path: &Path) -> Result<CString, String> {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(bytes).map_err(|_| format!("{} has a NUL byte", path.display()))
}

/// The system directories' part of every view: the same for every run of
/// this process, so made once and shared (a worker holds a view per run
/// with LOCAL tools for the run's life; issue #38).
fn system_view() -> Result<Arc<[child::System]>, String> {
    static SYSTEM: OnceLock<Result<Arc<[child::System]>, String>> = OnceLock::new();
    let made = SYSTEM.get_or_init(|| {
        system_dirs()
            .iter()
            .map(|(path, link)| {
                Ok(match link {
                    Some(target) => child::System::Link {
                        target: cstring("", target)?,
                        dst: cstring("/newroot", path)?,
                    },
                    None => child::System::Dir {
                        src: cstring("/oldroot", path)?,
                        dst: cstring("/newroot", path)?,
                        writable: path == Path::new("/dev"),
                    },
                })
            })
            .collect()
    });
    made.clone()
}

/// The mounts of the view for `paths`, or why there can be none.
fn view(paths: &RunPaths<'_>) -> Result<child::View, String> {
    let system = system_view()?;
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut binds = Vec::new();
    // The directory a mount point makes in the private /tmp (its own, or
    // the top of its parents there) is sealed read-only by the child.
    let mut seal: Vec<PathBuf> = Vec::new();
    let mut add = |path: &Path, readonly: bool, file: bool| -> Result<(), String> {
        let dst = absolute(path)?;
        let src = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let made = if file {
            dst.parent()
        } else {
            Some(dst.as_path())
        };
        let in_tmp = made.and_then(|d| {
            d.ancestors()
                .find(|a| a.parent() == Some(Path::new("/tmp")))
        });
        if let Some(top) = in_tmp.filter(|top| !seal.iter().any(|s| s == top)) {
            seal.push(top.to_path_buf());
        }
        binds.push(child::Bind {
            src: cstring("/oldroot", &src)?,
            dst: cstring("/newroot", &dst)?,
            readonly,
            file,
        });
        Ok(())
    };
    add(paths.run_dir, false, false)?;
    add(paths.parcel, true, false)?;
    add(paths.brief, true, true)?;
    for shared in &paths.shared {
        if !shared.starts_with(paths.run_dir) {
            add(shared, false, false)?;
        }
    }
    let mut hide = Vec::new();
    let overlay = crate::workspace::overlay::state_dir(paths.run_dir);
    if overlay.is_dir() {
        hide.push(cstring("/newroot", &absolute(&overlay)?)?);
    }
    let seal = seal
        .iter()
        .map(|d| cstring("/newroot", d))
        .collect::<Result<Vec<_>, _>>()?;
    // Held for the run's life: no spare capacity.
    binds.shrink_to_fit();
    Ok(child::View {
        system,
        pid_ns: true,
        binds,
        hide,
        seal,
        cwd: cstring("", &absolute(paths.cwd)?)?,
    })
}

/// Hardens the helper (or worker) that runs agents, first thing, while it
/// has one thread: it becomes non-dumpable (no process of another user, nor
/// an agent of the same user, may read its memory or `/proc/<pid>/environ`),
/// and the environment it was started with is moved off the block the
/// kernel shows as `/proc/<pid>/environ`, which is then wiped: the
/// variables stay readable to this process only.
///
/// # Safety
///
/// Only while the process has a single thread (it changes the environment).
pub unsafe fn harden_process() {
    let _ = nix::sys::prctl::set_dumpable(false);
    let Some((start, end)) = env_block() else {
        return;
    };
    let vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
    for (k, v) in &vars {
        // SAFETY: the caller guarantees a single thread; set_var copies the
        // pair to the heap, off the block wiped below.
        unsafe { std::env::set_var(k, v) };
    }
    if end <= start {
        return;
    }
    // SAFETY: [start, end) is this process's initial environment block on
    // its stack (from /proc/self/stat), mapped writable; after the loop
    // above no variable points into it any more.
    unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
}

/// `env_start` and `env_end` of this process: the span of the strings
/// `environ` points at when they are still all the ones the kernel copied
/// at `exec` (each right after the one before, the last ending where the
/// kernel put the program's file name, `AT_EXECFN`: its `env_end`), else
/// fields 50 and 51 of `/proc/self/stat` (a file read more on every run's
/// path).
fn env_block() -> Option<(usize, usize)> {
    // SAFETY: single-threaded (the caller's contract): `environ` is a
    // null-terminated array of NUL-terminated strings nobody changes now.
    if let Some(span) = unsafe { environ_span() } {
        return Some(span);
    }
    env_block_of_proc()
}

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// The span of the strings `environ` points at, when they lie end to end
/// up to `AT_EXECFN` (`(0, 0)` for no variable); `None` when they do not.
///
/// # Safety
///
/// No thread may change the environment meanwhile.
unsafe fn environ_span() -> Option<(usize, usize)> {
    // SAFETY: the caller's contract; every pointer read is one of the
    // null-terminated array, every string NUL-terminated.
    unsafe {
        let mut at = environ;
        if at.is_null() || (*at).is_null() {
            return Some((0, 0));
        }
        let start = *at as usize;
        let mut end = start;
        while !(*at).is_null() {
            let s = *at;
            if s as usize != end {
                return None;
            }
            end += libc::strlen(s) + 1;
            at = at.add(1);
        }
        (end as libc::c_ulong == libc::getauxval(libc::AT_EXECFN)).then_some((start, end))
    }
}

/// `env_start` and `env_end` of this process (fields 50 and 51 of
/// `/proc/self/stat`).
fn env_block_of_proc() -> Option<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields resume at the third (the state) after the name.
    let start = fields.get(50 - 3)?.parse().ok()?;
    let end = fields.get(51 - 3)?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests;
