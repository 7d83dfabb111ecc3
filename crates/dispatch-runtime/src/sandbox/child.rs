//! What runs between `fork` and `exec` to put a process in the sandbox.
//!
//! Everything here is called from a `pre_exec` hook, in a child forked
//! from a multi-threaded process: only async-signal-safe system calls, no
//! allocation (every path was made a `CString` before the fork, and nix is
//! given `&CStr`s, which it passes through as they are).
//!
//! With the namespaces, three processes stand where the spawned one did:
//!
//! - the spawned process (`C0`, the pid and process group the helper knows)
//!   enters a new mount and PID namespace (`unshare` moves its *children*
//!   into the new PID namespace), forks `C1`, closes every descriptor,
//!   ignores the termination signals a process group gets, and waits: it
//!   exits as `C1` did. A `SIGTERM` to the group so reaches the agent, and
//!   the helper's grace period means what it did;
//! - `C1` is PID 1 of the new namespace: it builds the agent's filesystem
//!   view and forks `C2`, then reaps until `C2` exits and exits with its
//!   status — which ends everything left in the namespace;
//! - `C2` (PID 2) drops to the sandbox's uid with no capabilities and
//!   `no_new_privs`, and returns to `std`, which executes the program. An
//!   error before that (a mount refused, an `exec` that fails) is reported
//!   by `std` from whichever process hit it, through the pipe every one of
//!   them inherited, so `spawn` fails as it would have.
//!
//! Where the caller states the program before the fork (a helper's agent,
//! a stage's tool), `C1` and `C2` are not forks but clones sharing `C0`'s
//! memory, and `C2` executes the program itself; an error of either comes
//! back to `C0`, which returns it to `std` (see [`super::shared_vm`]).
//!
//! Without root, `C0` first enters a new user namespace too
//! (`Steps::userns`), mapping only its own uid and gid, which gives it the
//! capabilities to build the same view inside; `C2` then drops every
//! capability but keeps its uid (there is no other to change to).
//!
//! With `NETWORK allow`, the spawned process first joins the run's network
//! namespace (`Steps::netns`, see [`super::netns`]), as root.
//!
//! Without the namespaces (`Steps::view` is `None`) the spawned process just
//! drops its privileges, and restricts itself to a Landlock ruleset made
//! before the fork when there is one (`Steps::landlock`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

/// One bind mount of the view.
#[derive(Serialize, Deserialize)]
pub(super) struct Bind {
    /// Where it is on the host, under `/oldroot` (canonical).
    #[serde(with = "super::wire::one")]
    pub src: CString,
    /// Where the agent sees it, under `/newroot` (the path it was given).
    #[serde(with = "super::wire::one")]
    pub dst: CString,
    pub readonly: bool,
    /// A file: its mount point is an empty file (else a directory), made
    /// with the directories above it.
    pub file: bool,
}

/// A system directory of the host, or the symlink it is.
#[derive(Serialize, Deserialize)]
pub(super) enum System {
    /// `/oldroot/usr` onto `/newroot/usr`, read-only unless `writable`.
    Dir {
        #[serde(with = "super::wire::one")]
        src: CString,
        #[serde(with = "super::wire::one")]
        dst: CString,
        writable: bool,
    },
    /// `/newroot/bin` → `usr/bin`.
    Link {
        #[serde(with = "super::wire::one")]
        target: CString,
        #[serde(with = "super::wire::one")]
        dst: CString,
    },
}

/// The agent's filesystem view, as mounts to make under `/newroot`.
#[derive(Serialize, Deserialize)]
pub(super) struct View {
    pub system: std::sync::Arc<[System]>,
    /// A fresh `/proc` (the PID namespace's), else the host's bound.
    pub pid_ns: bool,
    /// In order; each one's mount point is made first, with its parents
    /// (kept as the binds' own paths, not as a list of every directory
    /// above them: a waiting run holds its view).
    pub binds: Vec<Bind>,
    /// Mounted over with an empty, unreadable tmpfs.
    #[serde(with = "super::wire::many")]
    pub hide: Vec<CString>,
    /// Directories made in the private `/tmp` to hold the binds' mount
    /// points (a state directory under `/tmp` has its parents there): bound
    /// onto themselves read-only, so the agent, who may own them in a user
    /// namespace, cannot write beside its binds.
    #[serde(with = "super::wire::many")]
    pub seal: Vec<CString>,
    /// The working directory, as the agent sees it.
    #[serde(with = "super::wire::one")]
    pub cwd: CString,
}

/// The maps of a user namespace made without root: this process's own
/// uid and gid, mapped to themselves (`"1000 1000 1"`).
#[derive(Serialize, Deserialize)]
pub(super) struct UserMaps {
    #[serde(with = "super::wire::one")]
    pub uid_map: CString,
    #[serde(with = "super::wire::one")]
    pub gid_map: CString,
}

/// Everything the child does, made before the fork.
pub(super) struct Steps {
    pub uid: u32,
    pub gid: u32,
    pub view: Option<View>,
    /// Not root: the view is built in a user namespace of this user.
    pub userns: Option<UserMaps>,
    /// Not root and no user namespace: the Landlock ruleset to enforce.
    pub landlock: Option<OwnedFd>,
    /// What `C0` watches: its supervisor's life and the run's lease.
    pub tether: Option<super::tether::Tie>,
    /// `NETWORK allow`: the run's network namespace, joined first (see
    /// [`super::netns`]).
    pub netns: Option<OwnedFd>,
}

fn err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Runs in the spawned child (`pre_exec`): returns in the process that is
/// to execute the program.
/// `exec`: the program the sandbox's last process executes, when the
/// caller knows it (then `C1` and `C2` share this process's memory, see
/// [`super::shared_vm`]); without it they are forks and `C2` returns.
pub(super) fn enter(steps: &Steps, exec: Option<&super::shared_vm::Exec>) -> io::Result<()> {
    // While root: joining a network namespace takes CAP_SYS_ADMIN.
    if let Some(ns) = &steps.netns {
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(err)?;
    }
    let Some(view) = &steps.view else {
        drop_privileges(steps)?;
        return match &steps.landlock {
            Some(ruleset) => restrict_self(ruleset),
            None => Ok(()),
        };
    };
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC;
    if view.pid_ns {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if steps.userns.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(err)?;
    if let Some(maps) = &steps.userns {
        // The helper is non-dumpable, so its children's /proc/self files
        // belong to the host's root and this user cannot write its own
        // maps: dumpable for those three writes only (no other process
        // of this user sees this one but the user's own, unsandboxed).
        nix::sys::prctl::set_dumpable(true).map_err(err)?;
        let written = write_maps(maps);
        nix::sys::prctl::set_dumpable(false).map_err(err)?;
        written?;
    }
    if let Some(exec) = exec {
        return super::shared_vm::start(steps, view, exec);
    }
    // SAFETY: async-signal-safe from here on (see the module docs); the
    // child only makes system calls until it executes or exits.
    match unsafe { nix::unistd::fork() }.map_err(err)? {
        ForkResult::Parent { child } => {
            let fds = steps.tether.as_ref().and_then(|t| t.fds());
            mirror(child, Some(fds))
        }
        ForkResult::Child => {
            // The spawned process (C0) never outlives the helper, nor C1 it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(err)?;
            build_view(view)?;
            // SAFETY: as above.
            match unsafe { nix::unistd::fork() }.map_err(err)? {
                ForkResult::Parent { child } => mirror(child, None),
                ForkResult::Child => drop_privileges(steps),
            }
        }
    }
}

/// Waits for `child` and exits as it did; never returns. `outer`: the
/// process the helper spawned (`C0`), with its tether's descriptors when it
/// has one: it ignores a group's termination signals (the agent gets them
/// and decides), re-raises a signal `child` died of, and kills `child` (the
/// namespace's init, so every process of the run) when its supervisor is
/// gone or the run's lease deadline passed (see [`super::tether`]).
pub(super) fn mirror(child: Pid, outer: Option<Option<(RawFd, RawFd)>>) -> ! {
    // Nothing of these processes needs a descriptor (not std's error pipe
    // either: its last writer is the process that executes), but C0's
    // tether, moved to 0 and 1 first.
    let tether = outer.flatten().map(|(pipe, deadline)| {
        // SAFETY: dup2(2) on descriptors this process holds.
        unsafe {
            libc::dup2(pipe, 0);
            libc::dup2(deadline, 1);
        }
        (0, 1)
    });
    let first = if tether.is_some() { 2 } else { 0 };
    // SAFETY: close_range(2) takes no pointers.
    unsafe { libc::close_range(first, libc::c_uint::MAX, 0) };
    if outer.is_some() {
        ignore_group_signals();
    }
    if let Some((pipe, deadline)) = tether
        && watch_until_exit(child, pipe, deadline)
    {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    }
    match outer {
        Some(_) => exit_as(child),
        None => reap_until(child, false),
    }
}

/// Ignores the termination signals a process group gets (the outer
/// process of a run: the program gets them and decides).
pub(super) fn ignore_group_signals() {
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigIgn) };
    }
}

/// Waits for `child` (this process's only one) and exits as it did: its
/// code, or the signal it died of, raised again.
pub(super) fn exit_as(child: Pid) -> ! {
    reap_until(child, true)
}

/// Reaps until `child` exits, then exits with its status. `only`: wait for
/// `child` alone and raise the signal it died of; else reap every orphan
/// (PID 1 of a namespace).
fn reap_until(child: Pid, only: bool) -> ! {
    let wait_for = if only { Some(child) } else { None };
    let code = loop {
        match waitpid(wait_for, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => break code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                if only {
                    // SAFETY: restoring the default action installs no code.
                    let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
                    let _ = nix::sys::signal::raise(sig);
                }
                break 128 + sig as i32;
            }
            Err(nix::Error::EINTR) | Ok(_) => continue,
            Err(_) => break 1,
        }
    };
    // SAFETY: _exit(2) ends the process without running any user code.
    unsafe { libc::_exit(code) }
}

/// Until `child` exits, or the tether's pipe hangs up (the supervisor is
/// gone) or its deadline passed: then returns `true` (the caller kills).
/// `false` once `child` has exited (not reaped).
pub(super) fn watch_until_exit(child: Pid, pipe: RawFd, deadline: RawFd) -> bool {
    // SAFETY: pidfd_open(2) takes a pid and flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) } as RawFd;
    if pidfd < 0 {
        return false; // before Linux 5.3: the process's group kill is all there is
    }
    watch_pidfd(pidfd, pipe, deadline)
}

/// [`watch_until_exit`] of the process `pidfd` refers to (any process,
/// not only a child of this one).
pub(super) fn watch_pidfd(pidfd: RawFd, pipe: RawFd, deadline: RawFd) -> bool {
    loop {
        let due = read_deadline(deadline);
        let now = super::tether::monotonic_now();
        if due <= now {
            return true;
        }
        let timeout = match due {
            super::tether::NEVER => -1,
            due => ((due - now) / 1_000_000).clamp(1, i32::MAX as u64) as i32,
        };
        let mut fds = [
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pipe,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) reads and writes the two entries on this frame.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        if fds[0].revents != 0 {
            return false; // exited: the caller reaps it
        }
        if fds[1].revents != 0 {
            // Nobody writes to the pipe: readable means hung up.
            return true;
        }
    }
}

/// Whether the lease deadline in the memfd `deadline` has passed.
pub(super) fn past_deadline(deadline: RawFd) -> bool {
    read_deadline(deadline) <= super::tether::monotonic_now()
}

/// The deadline in the memfd (read until two reads agree: a write is 8
/// bytes that a reader could see half of).
fn read_deadline(fd: RawFd) -> u64 {
    let read = || {
        let mut buf = [0u8; 8];
        // SAFETY: pread(2) fills at most 8 bytes of the buffer on this frame.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 8, 0) };
        (n == 8).then(|| u64::from_ne_bytes(buf))
    };
    let mut last = read();
    for _ in 0..3 {
        let again = read();
        if again == last {
            break;
        }
        last = again;
    }
    last.unwrap_or(super::tether::NEVER)
}

/// Builds the view under a fresh root and switches to it (in C1, PID 1 of
/// the new namespace, as root).
pub(super) fn build_view(view: &View) -> io::Result<()> {
    let none = None::<&CStr>;
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // Nothing of this namespace's mounts reaches the host, and back.
    mount(
        none,
        c"/",
        none,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        none,
    )
    .map_err(err)?;
    // A scratch root over /tmp, the host's root under it at /oldroot: the
    // scratch mount moves to `/`, so `/oldroot/tmp` is the host's /tmp.
    tmpfs(c"/tmp", safe, c"mode=0755")?;
    mkdir(c"/tmp/oldroot")?;
    mkdir(c"/tmp/newroot")?;
    nix::unistd::pivot_root(c"/tmp", c"/tmp/oldroot").map_err(err)?;
    nix::unistd::chdir(c"/").map_err(err)?;
    tmpfs(c"/newroot", safe, c"mode=0755")?;
    for s in view.system.iter() {
        match s {
            System::Dir { src, dst, writable } => {
                mkdir(dst)?;
                mount(Some(src.as_c_str()), dst.as_c_str(), none, bind, none).map_err(err)?;
                if !writable {
                    readonly(dst)?;
                }
            }
            System::Link { target, dst } => {
                nix::unistd::symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, dst.as_c_str())
                    .map_err(err)?;
            }
        }
    }
    // The run's own shared memory, messages and temporary files.
    let _ = tmpfs(c"/newroot/dev/shm", safe, c"mode=1777");
    mkdir(c"/newroot/proc")?;
    match view.pid_ns {
        true => mount(
            Some(c"proc"),
            c"/newroot/proc",
            Some(c"proc"),
            safe | MsFlags::MS_NOEXEC,
            none,
        )
        .map_err(err)?,
        false => mount(Some(c"/oldroot/proc"), c"/newroot/proc", none, bind, none).map_err(err)?,
    }
    mkdir(c"/newroot/tmp")?;
    tmpfs(c"/newroot/tmp", safe, c"mode=1777")?;
    // Every mount point first: the seal below makes the directories they
    // needed in the private /tmp read-only.
    for b in &view.binds {
        mount_point(&b.dst, b.file)?;
    }
    for d in &view.seal {
        mount(Some(d.as_c_str()), d.as_c_str(), none, bind, none).map_err(err)?;
        readonly(d)?;
    }
    for b in &view.binds {
        mount(Some(b.src.as_c_str()), b.dst.as_c_str(), none, bind, none).map_err(err)?;
        if b.readonly {
            readonly(&b.dst)?;
        }
    }
    for h in &view.hide {
        tmpfs(
            h,
            safe | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            c"mode=0,size=0",
        )?;
    }
    // The root itself: nothing to write there.
    mount(
        none,
        c"/newroot",
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | safe,
        none,
    )
    .map_err(err)?;
    // The new root replaces the scratch one, and the host's goes with it.
    nix::unistd::chdir(c"/newroot").map_err(err)?;
    nix::unistd::pivot_root(c".", c".").map_err(err)?;
    umount2(c".", MntFlags::MNT_DETACH).map_err(err)?;
    nix::unistd::chdir(view.cwd.as_c_str()).map_err(err)
}

fn tmpfs(at: &CStr, flags: MsFlags, data: &CStr) -> io::Result<()> {
    mount(Some(c"tmpfs"), at, Some(c"tmpfs"), flags, Some(data)).map_err(err)
}

/// Makes `path` and each directory above it (`mkdir -p`), as an empty
/// file when `file`, an existing one being fine. The parents are cut from
/// a copy of the path on this stack: nothing is allocated between fork
/// and exec.
fn mount_point(path: &CStr, file: bool) -> io::Result<()> {
    let bytes = path.to_bytes_with_nul();
    let mut buf = [0u8; libc::PATH_MAX as usize];
    let Some(copy) = buf.get_mut(..bytes.len()) else {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    };
    copy.copy_from_slice(bytes);
    for i in 1..bytes.len() - 1 {
        if copy[i] == b'/' {
            copy[i] = 0;
            let parent = CStr::from_bytes_until_nul(copy)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            mkdir(parent)?;
            copy[i] = b'/';
        }
    }
    if !file {
        return mkdir(path);
    }
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(err)?;
    drop(fd);
    Ok(())
}

/// `mkdir`, an existing directory being fine.
fn mkdir(path: &CStr) -> io::Result<()> {
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Makes the bind mount at `at` read-only (and without set-uid programs or
/// devices), keeping the flags it has: in a user namespace the ones the
/// host's mount had are locked (`noexec`, the atime flags), and a remount
/// that drops one is refused.
fn readonly(at: &CStr) -> io::Result<()> {
    // SAFETY: a plain C struct of integers, all-zero being valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `at` is a NUL-terminated path; `st` outlives the call. On
    // Linux since 2.6.36 glibc answers from statfs(2)'s flags alone (no
    // allocation, no /proc/mounts).
    if unsafe { libc::statvfs(at.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let kept = [
        (libc::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (libc::ST_NOATIME, MsFlags::MS_NOATIME),
        (libc::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (libc::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let mut flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    for (st_flag, ms_flag) in kept {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount(None::<&CStr>, at, None::<&CStr>, flags, None::<&CStr>).map_err(err)
}

/// Maps this process's uid and gid in the user namespace it just made
/// (`setgroups` denied first, as an unprivileged map requires).
fn write_maps(maps: &UserMaps) -> io::Result<()> {
    write_file(c"/proc/self/setgroups", c"deny")?;
    write_file(c"/proc/self/uid_map", &maps.uid_map)?;
    write_file(c"/proc/self/gid_map", &maps.gid_map)
}

fn write_file(path: &CStr, text: &CStr) -> io::Result<()> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let bytes = text.to_bytes();
    match nix::unistd::write(&fd, bytes).map_err(err)? {
        n if n == bytes.len() => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Enforces the Landlock ruleset made before the fork on this process
/// (`no_new_privs` is set already, as the kernel requires).
fn restrict_self(ruleset: &OwnedFd) -> io::Result<()> {
    // SAFETY: landlock_restrict_self(2) takes a descriptor and flags; the
    // ruleset's descriptor is open until the program executes.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The sandbox's user, no capabilities in any set (bounding and ambient
/// included), no new privileges from set-uid programs or file capabilities.
/// A process that is not root changes no user: in its own user namespace
/// it gives up the capabilities it has there; outside one it only sets
/// `no_new_privs` (it has nothing else to give up).
pub(super) fn drop_privileges(steps: &Steps) -> io::Result<()> {
    // SAFETY: geteuid(2) takes no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    if root || steps.userns.is_some() {
        for cap in 0..64 {
            // SAFETY: prctl(2) with integer arguments; an unknown
            // capability number is EINVAL, which ends the list.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                break;
            }
        }
        // SAFETY: prctl(2) with integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        };
        if root {
            // The system calls themselves, not glibc's wrappers, which
            // would signal every thread glibc counts in this memory (one
            // it may share with `C0` and `C1`, see `shared_vm`): each
            // changes this process's credentials, its only thread's.
            let (uid, gid) = (steps.uid, steps.gid);
            // SAFETY: setgroups(2) of no groups; setresgid(2), setresuid(2)
            // of plain integers.
            let failed = unsafe {
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            };
            if failed {
                return Err(io::Error::last_os_error());
            }
        }
        // Changing to a user other than root empties the permitted and
        // effective sets (a user namespace's creator keeps them: emptied
        // here, with the inheritable one).
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: capset(2) reads the header and two data words, which
        // live on this stack frame for the call.
        if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(err)
}
