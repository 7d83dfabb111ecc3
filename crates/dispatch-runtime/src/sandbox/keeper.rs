//! The keeper of a run without a PID namespace whose processes are in a
//! containment group (see `crate::contain`): nothing of the run survives
//! its supervisor, even what left the agent's process group.
//!
//! The spawned process (the pid and process group the helper knows) goes
//! on to execute the program. Before it does, it makes the keeper *beside*
//! it without copying anything: a process sharing its memory (`CLONE_VM`)
//! makes the keeper the same way and exits, so the keeper is nobody's
//! child here (init reaps it) and the program has no child it did not
//! make; once the program executes, the spawned process's old memory is
//! the keeper's alone. Forking the keeper instead copied the supervisor's
//! page tables once more for every run and every unsandboxed tool call
//! (about 1 ms of a start, issue #33). Where that cannot be — before
//! Linux 5.3 (no pidfd), or under a supervisor that is PID 1 (a worker as
//! a container's init, which reaps only its own children) — the spawned
//! process forks the program and stays as its keeper, as a stage does
//! ([`Keeper::enter_forked`]).
//!
//! The keeper does what a sandboxed run's outer process does (see
//! [`super::child`]): it closes every descriptor but its tether's, its
//! group's and the program's pidfd, ignores the termination signals a
//! process group gets (the program gets them and decides), leaves the
//! run's group for the one above (whoever freezes the run's group to kill
//! it and dies before thawing it must not freeze the keeper too), and waits
//! for the program. When the tether's pipe hangs up (its supervisor is gone,
//! however it died) or the run's lease deadline passes, it kills everything
//! in the run's group: on cgroup v1 it freezes the group, sends SIGKILL
//! to every pid of `cgroup.procs` (opened afresh for each pass: v1 may hand
//! an open descriptor a list up to a second old) and thaws it, until the
//! group is empty; on v2 it writes `cgroup.kill`. The emptied group is
//! removed (its record stays for recovery, which then finds nothing). A
//! keeper beside its program does not leave when the program exits while
//! anything of the run is left in the group: it keeps the tether until its
//! supervisor has emptied the group ([`Keeper::outlived`]).
//!
//! A forked keeper's program gets a parent-death signal (the keeper's
//! death kills it); the keeper has none: it must outlive its supervisor to
//! do its work. A program beside its keeper has none either (its parent is
//! a thread of the supervisor, whose exit would fire it): the keeper kills
//! it when the supervisor dies. That keeper has a process group of its own,
//! so a `stop` (or a fencing worker) that kills the program's group cannot
//! kill it half-way through a kill of its own; with the program gone and
//! the tether up, it exits.
//!
//! What lives outside the group — a container the container courier's
//! client asked its runtime for, which the runtime's monitor keeps — is
//! removed by an *epilogue*: a command set before the spawn
//! ([`Keeper::after_kill`], `podman rm -f -t 0 <name>`) that the keeper
//! starts once the group is dead, with its output on `/dev/null`.
//!
//! Everything after the fork is async-signal-safe: raw system calls on
//! descriptors opened and paths made before it, no allocation.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::tether::Tether;

/// A command the keeper starts after it killed the group: its program,
/// arguments and environment, made before the fork.
struct Epilogue {
    /// What it was made from (for a stage process, see [`Keeper::spec`]).
    source: Command,
    _strings: Vec<CString>,
    /// Null-terminated `argv` and `envp` pointing into `_strings`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and
// never changed after it is made; they are only read.
unsafe impl Send for Epilogue {}
// SAFETY: as above.
unsafe impl Sync for Epilogue {}

/// What the keeper holds, made before the fork.
pub(crate) struct Keeper {
    /// Its tether's pipe and deadline: its own (`_tether` keeps them
    /// open), or received by a stage process.
    tether: (RawFd, RawFd),
    _tether: Option<Arc<Tether>>,
    /// `freezer.state` (v1) or `cgroup.kill` (v2), opened for writing.
    stop: File,
    v1: bool,
    /// The group's `cgroup.procs`, to open for each pass.
    procs: CString,
    /// The group, removed once emptied.
    dir: CString,
    /// The entry file of the group above (`dispatch/`), to leave the run's.
    out: File,
    /// What to start once the group is dead, when something of the run
    /// lives outside it.
    after: OnceLock<Epilogue>,
}

/// An epilogue's command: its arguments and environment.
type Command = (Vec<String>, Vec<(String, String)>);

/// A keeper as a stage process receives it (see [`Keeper::spec`]).
#[derive(Serialize, Deserialize)]
pub(super) struct KeeperSpec {
    pipe: usize,
    deadline: usize,
    stop: usize,
    out: usize,
    v1: bool,
    #[serde(with = "super::wire::one")]
    procs: CString,
    #[serde(with = "super::wire::one")]
    dir: CString,
    after: Option<Command>,
}

/// The keeper's descriptors once moved (see [`settle`]).
const PIPE: RawFd = 0;
const DEADLINE: RawFd = 1;
const STOP: RawFd = 2;
const OUT: RawFd = 3;
/// The program's pidfd, for a keeper beside it.
const PIDFD: RawFd = 4;

/// What the short-lived process and the keeper beside the program run on:
/// their stacks, and the keeper and pidfd they are for. Only processes a
/// spawned child makes use them, each in that child's own copy of this
/// memory (the supervisor never does), so they never share it.
const FIRST_STACK: usize = 16 << 10;
const KEEPER_STACK: usize = 112 << 10;

#[repr(C, align(16))]
struct Stacks(UnsafeCell<[u8; FIRST_STACK + KEEPER_STACK]>);

// SAFETY: see above: in any one memory, one process at a time runs on
// each stack, and the supervisor's copy is never touched.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([0; FIRST_STACK + KEEPER_STACK]));
static BESIDE_KEEPER: AtomicPtr<Keeper> = AtomicPtr::new(std::ptr::null_mut());
static BESIDE_PIDFD: AtomicI32 = AtomicI32::new(-1);

/// The top of the stack `[from, from + len)` of [`STACKS`] (stacks grow down).
fn stack_top(from: usize, len: usize) -> *mut libc::c_void {
    // SAFETY: `from + len` is within the array, a multiple of 16 from its
    // 16-aligned start.
    unsafe { STACKS.0.get().cast::<u8>().add(from + len).cast() }
}

/// The short-lived process: makes the keeper beside the program (sharing
/// the memory again) and exits 0, or 1 when it could not.
extern "C" fn first(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: as `enter_beside`'s clone: the keeper runs on its own stack.
    let keeper = unsafe {
        libc::clone(
            keeper_main,
            stack_top(FIRST_STACK, KEEPER_STACK),
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    libc::c_int::from(keeper < 0)
}

/// The keeper beside the program.
extern "C" fn keeper_main(_: *mut libc::c_void) -> libc::c_int {
    let this = BESIDE_KEEPER.load(Ordering::SeqCst);
    // SAFETY: the spawned child set it to its keeper before it made this
    // process; the memory it points into is this process's own once the
    // child executes the program, and nothing frees it.
    let keeper = unsafe { &*this };
    keeper.keep_beside(BESIDE_PIDFD.load(Ordering::SeqCst))
}

impl Keeper {
    /// A keeper for the processes of group `dir`, tethered to this process
    /// by `tether`.
    pub(crate) fn new(tether: Arc<Tether>, dir: &Path) -> io::Result<Keeper> {
        let v1 = dir.join("freezer.state").exists();
        let open = |p: &Path| std::fs::OpenOptions::new().write(true).open(p);
        let stop = open(&dir.join(if v1 { "freezer.state" } else { "cgroup.kill" }))?;
        let parent = dir.parent().ok_or(io::ErrorKind::NotFound)?;
        let out = open(&parent.join(if v1 { "tasks" } else { "cgroup.procs" }))?;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        Ok(Keeper {
            tether: tether.fds(),
            _tether: Some(tether),
            stop,
            v1,
            procs: c(&dir.join("cgroup.procs"))?,
            dir: c(dir)?,
            out,
            after: OnceLock::new(),
        })
    }

    /// Makes the keeper start `argv` with `env` once it killed the group
    /// (the first call wins). Call it before the spawn.
    pub(crate) fn after_kill(&self, argv: &[String], env: &[(String, String)]) -> io::Result<()> {
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        if argv.is_empty() {
            return Err(invalid());
        }
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for a in argv {
            strings.push(CString::new(a.as_bytes()).map_err(|_| invalid())?);
        }
        for (k, v) in env {
            strings.push(CString::new(format!("{k}={v}")).map_err(|_| invalid())?);
        }
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|c| c.as_ptr()).collect();
        let mut envp = ptrs.split_off(argv.len());
        ptrs.push(std::ptr::null());
        envp.push(std::ptr::null());
        let _ = self.after.set(Epilogue {
            source: (argv.to_vec(), env.to_vec()),
            _strings: strings,
            argv: ptrs,
            envp,
        });
        Ok(())
    }

    /// What a stage process needs to be this keeper (see [`super::stage`]):
    /// its descriptors are added to `pass`, and named by their index there.
    pub(super) fn spec(&self, pass: &mut Vec<RawFd>) -> KeeperSpec {
        let mut add = |fd: RawFd| {
            pass.push(fd);
            pass.len() - 1
        };
        let (pipe, deadline) = self.tether;
        KeeperSpec {
            pipe: add(pipe),
            deadline: add(deadline),
            stop: add(self.stop.as_raw_fd()),
            out: add(self.out.as_raw_fd()),
            v1: self.v1,
            procs: self.procs.clone(),
            dir: self.dir.clone(),
            after: self.after.get().map(|e| e.source.clone()),
        }
    }

    /// The keeper a stage process received: `fd` gives the descriptor it
    /// holds for each index of the spec (which it owns from now on).
    pub(super) fn from_spec(spec: KeeperSpec, fd: impl Fn(usize) -> RawFd) -> io::Result<Keeper> {
        use std::os::fd::FromRawFd;
        // SAFETY: the stage received these descriptors for this keeper
        // alone and hands each to one owner.
        let (stop, out) = unsafe {
            (
                File::from_raw_fd(fd(spec.stop)),
                File::from_raw_fd(fd(spec.out)),
            )
        };
        let keeper = Keeper {
            tether: (fd(spec.pipe), fd(spec.deadline)),
            _tether: None,
            stop,
            v1: spec.v1,
            procs: spec.procs,
            dir: spec.dir,
            out,
            after: OnceLock::new(),
        };
        if let Some((argv, env)) = &spec.after {
            keeper.after_kill(argv, env)?;
        }
        Ok(keeper)
    }

    /// Runs in the spawned child (`pre_exec`), after it entered the group:
    /// returns in the process that is to execute the program; the keeper
    /// never returns. The keeper is made beside the program where it can
    /// be ([`Keeper::enter_beside`]: no copy of this process's memory),
    /// else it is this process, which forks the program.
    pub(crate) fn enter(&self) -> io::Result<()> {
        // A keeper beside the program is an orphan once made: where this
        // process's parent is PID 1 (a worker as a container's init), it
        // would be the supervisor's to reap, which reaps only its own.
        // SAFETY: getppid(2) takes nothing.
        if unsafe { libc::getppid() } != 1 && self.enter_beside()? {
            return Ok(());
        }
        self.enter_forked()
    }

    /// The keeper as the program's parent: this process forks the program
    /// and stays (one copy of its memory more: what a stage does, whose
    /// memory is small and whose pid the worker knows as the keeper's).
    pub(super) fn enter_forked(&self) -> io::Result<()> {
        // SAFETY: async-signal-safe from here on (see the module docs).
        match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
            nix::unistd::ForkResult::Child => {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(io::Error::from)
            }
            nix::unistd::ForkResult::Parent { child } => {
                let _ = nix::sys::prctl::set_pdeathsig(None);
                let (pipe, deadline) = self.tether;
                settle(&[pipe, deadline, self.stop.as_raw_fd(), self.out.as_raw_fd()]);
                super::child::ignore_group_signals();
                leave_group();
                if super::child::watch_until_exit(child, PIPE, DEADLINE) {
                    self.kill_group();
                    // On v2 a RESOURCES group took the program out of the
                    // run's: it dies anyway (its own group is removed,
                    // with what is left in it, at recovery).
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    self.epilogue();
                }
                super::child::exit_as(child)
            }
        }
    }

    /// The keeper beside the program: this process (which goes on to
    /// execute the program) makes a short-lived process sharing its memory
    /// (`CLONE_VM`, so nothing is copied), which makes the keeper the same
    /// way and exits; this process reaps it. The keeper is then nobody's
    /// child here (init reaps it), the program has no child it did not
    /// make, and once the program executes, the memory of this process is
    /// the keeper's alone. The keeper watches the program through a pidfd.
    /// `false` where pidfds are missing (before Linux 5.3).
    fn enter_beside(&self) -> io::Result<bool> {
        // SAFETY: getpid(2) and pidfd_open(2) take plain integers.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as RawFd;
        if pidfd < 0 {
            return Ok(false);
        }
        BESIDE_KEEPER.store(std::ptr::from_ref(self).cast_mut(), Ordering::SeqCst);
        BESIDE_PIDFD.store(pidfd, Ordering::SeqCst);
        // SAFETY: the new process runs `first` on its own stack (see
        // `Stacks`) in this process's memory, and only makes the keeper
        // (below) and exits; this process waits for it.
        let first = unsafe {
            libc::clone(
                first,
                stack_top(0, FIRST_STACK),
                libc::CLONE_VM | libc::SIGCHLD,
                std::ptr::null_mut(),
            )
        };
        let made = first > 0 && {
            let mut status = -1;
            // SAFETY: waitpid(2) of the process just made, into a local.
            while unsafe { libc::waitpid(first, &mut status, 0) } < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        };
        // SAFETY: close(2) of the pidfd opened above (the keeper has its own).
        unsafe { libc::close(pidfd) };
        match made {
            true => Ok(true),
            false => Err(io::Error::other("cannot start the run's keeper")),
        }
    }

    /// The keeper beside the program (`pidfd`): until the program exits,
    /// or the tether hangs up or its deadline passes, which kill the group.
    fn keep_beside(&self, pidfd: RawFd) -> ! {
        let (pipe, deadline) = self.tether;
        settle(&[
            pipe,
            deadline,
            self.stop.as_raw_fd(),
            self.out.as_raw_fd(),
            pidfd,
        ]);
        super::child::ignore_group_signals();
        leave_group();
        // Nor is it in the program's process group: a stop, or a worker's
        // fencing, that kills the group while this keeper has the run's
        // group frozen must not leave it frozen for good.
        // SAFETY: setpgid(2) takes plain integers.
        unsafe { libc::setpgid(0, 0) };
        // The program may have died *because* its supervisor did: its
        // parent-death signal fires when the thread that spawned it exits,
        // which can be before the supervisor's last thread closes the
        // tether. So after the program, the keeper waits a little for the
        // hang-up; then what the program left in the group is its to kill.
        if super::child::watch_pidfd(PIDFD, PIPE, DEADLINE)
            || hung_up(PIPE, AFTER_PROGRAM_MS)
            || self.outlived()
        {
            self.kill_group();
            // On v2 a RESOURCES group took the program out of the run's:
            // it dies anyway.
            // SAFETY: pidfd_send_signal(2) on the pidfd this process holds.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    PIDFD,
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            self.epilogue();
        }
        // SAFETY: _exit(2) ends the process without running any user code.
        unsafe { libc::_exit(0) }
    }

    /// Once the program has exited, while anything it left is still in the
    /// run's group (a child out of its process group, or one a kill of
    /// the group missed, until its supervisor kills the group at the
    /// attempt's end): `true` as soon as the tether hangs up or the
    /// deadline passes, so that nothing outlives its supervisor because
    /// the keeper left first (#33: a worker killed half-way through its
    /// own kill of such a group left it frozen, with no keeper).
    fn outlived(&self) -> bool {
        while !self.group_empty() {
            if hung_up(PIPE, OUTLIVED_POLL_MS) || super::child::past_deadline(DEADLINE) {
                return true;
            }
        }
        false
    }

    /// Whether the run's group has no process (or is gone).
    fn group_empty(&self) -> bool {
        // SAFETY: open(2) of a path made before the fork; read(2) into a
        // buffer on this frame; close(2) of the descriptor just opened.
        unsafe {
            let fd = libc::open(self.procs.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return true;
            }
            let mut byte = 0u8;
            let n = libc::read(fd, (&raw mut byte).cast(), 1);
            libc::close(fd);
            n <= 0
        }
    }

    /// Kills everything in the run's group (which this keeper left at once;
    /// leaving again costs nothing, should that first write have failed).
    fn kill_group(&self) {
        leave_group();
        if !self.v1 {
            // SAFETY: write(2) of a static buffer on a descriptor this process holds.
            unsafe { libc::write(STOP, b"1".as_ptr().cast(), 1) };
        }
        for _ in 0..2000 {
            if self.v1 {
                // SAFETY: as above.
                unsafe { libc::pwrite(STOP, b"FROZEN".as_ptr().cast(), 6, 0) };
                nap(1);
            }
            let killed = self.kill_listed();
            if self.v1 {
                // SAFETY: as above. A frozen process dies only once thawed.
                unsafe { libc::pwrite(STOP, b"THAWED".as_ptr().cast(), 6, 0) };
            }
            if killed == 0 {
                // SAFETY: rmdir(2) of a path made before the fork; the
                // group is empty (this process left it).
                unsafe { libc::rmdir(self.dir.as_ptr()) };
                return;
            }
            nap(2);
        }
    }

    /// Starts the epilogue, if any, in a child with its output on
    /// `/dev/null` and no other descriptor (the keeper's are the tether's
    /// and the group's, which it must not touch).
    fn epilogue(&self) {
        let Some(e) = self.after.get() else {
            return;
        };
        // SAFETY: fork(2) in a one-thread process; the child makes only
        // async-signal-safe system calls on data made before the fork.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: open(2), dup2(2), close_range(2), execve(2) and
                // _exit(2) on a static path and pointers into `e`.
                unsafe {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                    libc::close_range(3, libc::c_uint::MAX, 0);
                    for sig in [
                        libc::SIGTERM,
                        libc::SIGINT,
                        libc::SIGHUP,
                        libc::SIGQUIT,
                        libc::SIGPIPE,
                    ] {
                        libc::signal(sig, libc::SIG_DFL);
                    }
                    libc::setsid();
                    libc::execve(e.argv[0], e.argv.as_ptr(), e.envp.as_ptr());
                    libc::_exit(127);
                }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waitpid(2) of the child just forked, into a local.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
            _ => {}
        }
    }

    /// SIGKILL to every pid `cgroup.procs` lists now; how many there were.
    fn kill_listed(&self) -> usize {
        // SAFETY: open(2) of a path made before the fork.
        let fd = unsafe { libc::open(self.procs.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return 0;
        }
        let mut buf = [0u8; 4096];
        let mut killed = 0;
        let mut pid: i32 = 0;
        let mut digits = false;
        loop {
            // SAFETY: read(2) into the buffer on this frame.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            for &b in &buf[..n as usize] {
                if b.is_ascii_digit() {
                    pid = pid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                    digits = true;
                } else {
                    if digits && pid > 1 {
                        // SAFETY: kill(2) of a pid the run's group lists.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        killed += 1;
                    }
                    pid = 0;
                    digits = false;
                }
            }
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
        killed
    }
}

/// Moves the keeper out of the run's group, into the one above: whoever
/// freezes the run's group to kill it (its supervisor, recovery) and dies
/// before thawing it must not freeze the keeper with it, which would leave
/// the run's processes frozen for good (#33: `DISPATCH_SANDBOX=off` chaos
/// found them so, in state D, after every worker had stopped).
fn leave_group() {
    // SAFETY: write(2) of a static buffer on a descriptor this process holds.
    unsafe { libc::write(OUT, b"0".as_ptr().cast(), 1) };
}

/// Moves `fds` to 0, 1, 2, … (through copies above them, so no move
/// overwrites one still to be made) and closes every other descriptor.
fn settle(fds: &[RawFd]) {
    let mut high = [0; 5];
    for (i, fd) in fds.iter().enumerate().take(high.len()) {
        // SAFETY: fcntl(2) F_DUPFD on a descriptor this process holds.
        high[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD, 16) };
    }
    for (i, fd) in high.iter().enumerate().take(fds.len()) {
        // SAFETY: dup2(2) on descriptors this process holds.
        unsafe { libc::dup2(*fd, i as RawFd) };
    }
    // SAFETY: close_range(2) takes no pointers.
    unsafe { libc::close_range(fds.len() as libc::c_uint, libc::c_uint::MAX, 0) };
}

/// How long a keeper beside its program waits for the tether to hang up
/// once the program has exited (see [`Keeper::keep_beside`]).
const AFTER_PROGRAM_MS: i32 = 1000;

/// How often a keeper whose program has exited looks at what is left in
/// the run's group (see [`Keeper::outlived`]).
const OUTLIVED_POLL_MS: i32 = 50;

/// Whether the tether's pipe `fd` hangs up (nobody writes to it: readable
/// means hung up) within `ms` milliseconds.
fn hung_up(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll(2) of one entry on this frame.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return n > 0 && p.revents != 0;
        }
    }
}

/// Sleeps `ms` milliseconds (nanosleep(2) is async-signal-safe).
fn nap(ms: i64) {
    let t = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: nanosleep(2) reads the timespec on this frame.
    unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
}
