//! A run's LOCAL tool processes started from a small process (issue #38):
//! the *stage*.
//!
//! A worker or helper that runs native agents is a large process (80 MB at
//! a few hundred runs). Forking it for every tool call copied its page
//! tables, then cost it a copy-on-write fault for every page it wrote
//! while the child lived — three times with the sandbox on (`C0`, `C1` and
//! `C2` of [`super::child`], each a fork of the one before), about 40 % of
//! the worker's CPU per model round.
//!
//! Instead the worker starts `dispatch __stage` with `posix_spawn(3)`
//! (glibc's is `clone(CLONE_VM | CLONE_VFORK)`: no copy of anything, the
//! calling thread waits only until the `execve`), handing it a spec on a
//! memfd and the descriptors the steps need. The stage is a fresh, small
//! process of the same binary: it takes the same steps the forked child
//! took — the run's group entered, its [`super::keeper`] or the sandbox's
//! `C0`/`C1`/`C2` — from the same code, and executes the tool. Its forks
//! copy a few hundred kilobytes.
//!
//! The process tree is the one the fork made: the stage *is* the spawned
//! process (the pid and process group the worker knows, the keeper or
//! `C0`), a child of the worker with a parent-death signal, holding the
//! same tether; so every containment guarantee holds as it did, and there
//! is no long-lived process of its own to lose. If the worker dies between
//! the spawn and the stage's `prctl`, the stage sees another parent and
//! exits. What the stage costs instead is one `execve` of the binary.
//!
//! An error before the tool executes (the program not found, a mount
//! refused) is written by whichever process hit it to a close-on-exec pipe
//! (its errno, then its text): `launch` fails as `spawn` did.
//!
//! A stage is made by the worker's [`super::spawner`] (a fork of a small
//! process, not an `execve`) when it has one, else by `posix_spawn(3)` as
//! described here. `DISPATCH_SPAWN=stage` in the worker's or helper's
//! environment turns the spawner off; `DISPATCH_SPAWN=fork` turns the
//! stage off (tools are forked as before).

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use dispatch_agent::tools::launch::{LaunchRequest, Launched};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;

use super::child::{Steps, UserMaps, View};
use super::keeper::{Keeper, KeeperSpec};
use super::tether::Tie;

/// `dispatch __stage`: the argument that makes the binary a stage.
pub const STAGE_ARG: &str = "__stage";
/// `fork` turns the stage off.
pub const SPAWN_ENV: &str = "DISPATCH_SPAWN";

const SPEC_FD: RawFd = 3;
const ERROR_FD: RawFd = 4;
/// The descriptors the steps need, from here on, in the spec's order.
const FIRST_PASSED: RawFd = 5;

static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// This binary handles [`STAGE_ARG`] (its `main` calls [`main`]): the
/// runs it executes may start their tools through a stage.
pub fn enable() {
    AVAILABLE.store(true, Ordering::Relaxed);
}

/// Whether tools are started through a stage here: enabled, not turned
/// off, and the kernel has pidfds (Linux 5.4) to wait for a process with.
pub(super) fn enabled() -> bool {
    static PIDFD: OnceLock<bool> = OnceLock::new();
    AVAILABLE.load(Ordering::Relaxed)
        && !std::env::var(SPAWN_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("fork"))
        && *PIDFD.get_or_init(|| pidfd_open(std::process::id() as i32).is_ok())
}

/// What the stage does, written by the worker.
#[derive(Serialize, Deserialize)]
struct Spec<S> {
    /// The worker's pid: a stage with another parent exits.
    parent: i32,
    #[serde(with = "super::wire::one")]
    program: Vec<u8>,
    #[serde(with = "super::wire::many")]
    args: Vec<Vec<u8>>,
    #[serde(with = "super::wire::pairs")]
    env: Vec<(Vec<u8>, Vec<u8>)>,
    #[serde(with = "super::wire::one")]
    cwd: Vec<u8>,
    /// How many descriptors follow [`FIRST_PASSED`].
    passed: usize,
    /// The run's group's entry file (an index of the passed descriptors).
    entry: Option<usize>,
    keeper: Option<KeeperSpec>,
    steps: Option<S>,
}

#[derive(Serialize)]
struct StepsOut<'a> {
    uid: u32,
    gid: u32,
    view: Option<&'a View>,
    userns: Option<&'a UserMaps>,
    landlock: Option<usize>,
    tether: Option<(usize, usize)>,
    netns: Option<usize>,
}

#[derive(Deserialize)]
struct StepsIn {
    uid: u32,
    gid: u32,
    view: Option<View>,
    userns: Option<UserMaps>,
    landlock: Option<usize>,
    tether: Option<(usize, usize)>,
    #[serde(default)]
    netns: Option<usize>,
}

fn pass(fds: &mut Vec<RawFd>, fd: RawFd) -> usize {
    fds.push(fd);
    fds.len() - 1
}

/// Starts `req` through a stage that takes `plan`'s steps.
pub(super) fn launch(
    plan: &super::Plan,
    req: LaunchRequest,
) -> Pin<Box<dyn Future<Output = io::Result<Launched>> + Send>> {
    let started = start(plan, req);
    Box::pin(async move {
        let (pid, proc_, stdin, stdout, stderr, errors, tether) = started?;
        let mut proc_ = Proc::watch(proc_)?;
        // Until every process that could still fail has executed (or
        // exited): then the pipe's last writer is gone.
        let mut said = Vec::new();
        let mut errors = tokio::net::unix::pipe::Receiver::from_owned_fd(errors)?;
        errors.read_to_end(&mut said).await?;
        if said.len() >= 4 {
            let errno = i32::from_ne_bytes([said[0], said[1], said[2], said[3]]);
            let _ = proc_.wait().await;
            return Err(match errno {
                0 => io::Error::other(String::from_utf8_lossy(&said[4..]).into_owned()),
                e => io::Error::from_raw_os_error(e),
            });
        }
        Ok(Launched {
            pid: pid as u32,
            stdin: tokio::net::unix::pipe::Sender::from_owned_fd(stdin)?,
            stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?,
            stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)?,
            // The tether lives as long as the stage's process may.
            exit: Box::pin(async move {
                let exited = proc_.wait().await;
                drop(tether);
                exited
            }),
        })
    })
}

type Started = (
    i32,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    Option<std::sync::Arc<super::tether::Tether>>,
);

/// The spawn itself: the stage's pid, its pidfd, the worker's ends of its
/// stdin, stdout, stderr and error pipe, and the tether it was given (made
/// for it if none was held: see [`super::tether::Slot`]).
fn start(plan: &super::Plan, req: LaunchRequest) -> io::Result<Started> {
    let mut fds = Vec::new();
    let entry = plan
        .tree
        .as_ref()
        .and_then(|t| t.entry_fd())
        .map(|fd| pass(&mut fds, fd));
    let keeper = plan.keeper.as_ref().map(|k| k.spec(&mut fds));
    let tie = plan.steps.as_ref().and_then(|s| s.tether.as_ref());
    let held = tie.map(|t| t.hold()).transpose()?.flatten();
    let tether = match &held {
        Some(t) => Some(t.fds()),
        None => tie.and_then(Tie::fds),
    };
    // The view is serialized with each start, not kept as JSON for the
    // plan's next: a kept copy was held by every run waiting on its model
    // (issue #38 item 2), and making it costs microseconds.
    let steps = plan.steps.as_ref().map(|s| StepsOut {
        uid: s.uid,
        gid: s.gid,
        view: s.view.as_ref(),
        userns: s.userns.as_ref(),
        landlock: s.landlock.as_ref().map(|l| pass(&mut fds, l.as_raw_fd())),
        tether: tether.map(|(pipe, deadline)| (pass(&mut fds, pipe), pass(&mut fds, deadline))),
        netns: s.netns.as_ref().map(|n| pass(&mut fds, n.as_raw_fd())),
    });
    let bytes = |s: &std::ffi::OsStr| s.as_bytes().to_vec();
    let spec = Spec {
        parent: std::process::id() as i32,
        program: bytes(&req.program),
        args: req.args.iter().map(|a| bytes(a)).collect(),
        env: req.env.iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
        cwd: bytes(req.cwd.as_os_str()),
        passed: fds.len(),
        entry,
        keeper,
        steps,
    };
    let json = serde_json::to_vec(&spec).map_err(io::Error::other)?;
    // SAFETY: memfd_create(2) takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"dispatch-stage".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    let memfd = unsafe { std::fs::File::from_raw_fd(fd) };
    memfd.write_all_at(&json, 0)?;
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (errors_r, errors_w) = pipe()?;
    let mut sources = vec![
        stdin_r.as_raw_fd(),
        stdout_w.as_raw_fd(),
        stderr_w.as_raw_fd(),
        memfd.as_raw_fd(),
        errors_w.as_raw_fd(),
    ];
    sources.extend(&fds);
    let (pid, pidfd) = match super::spawner::spawn(&sources) {
        Some(started) => started?,
        None => spawn_watched(&sources)?,
    };
    // The stage's copies are its own now; the worker keeps its ends.
    drop((stdin_r, stdout_w, stderr_w, errors_w, memfd));
    Ok((pid, pidfd, stdin_w, stdout_r, stderr_r, errors_r, held))
}

/// [`spawn_stage`], and the stage's pidfd.
fn spawn_watched(sources: &[RawFd]) -> io::Result<(i32, OwnedFd)> {
    let pid = spawn_stage(sources)?;
    match pidfd_open(pid) {
        Ok(fd) => Ok((pid, fd)),
        Err(e) => {
            kill_child(pid);
            Err(e)
        }
    }
}

/// Kills and reaps `pid`, a child of this process not yet reaped (so its
/// pid cannot have been reused).
pub(super) fn kill_child(pid: i32) {
    // SAFETY: kill(2) and waitpid(2) of this process's own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// `posix_spawn` of `/proc/self/exe __stage`, with `sources` as its
/// descriptors 0, 1, 2, … (see [`spawn_self`]).
fn spawn_stage(sources: &[RawFd]) -> io::Result<i32> {
    let n = sources.len() as RawFd;
    // Copies above every source and target first, so that no move
    // overwrites a source still to be moved (the stage closes them).
    let high = sources.iter().copied().max().unwrap_or(0).max(n) + 1;
    let argv = [c"dispatch".as_ptr(), c"__stage".as_ptr(), std::ptr::null()];
    spawn_self(&argv, |actions| {
        let mut rc = 0;
        // SAFETY: file actions on the initialized `actions`.
        unsafe {
            for (i, fd) in sources.iter().enumerate() {
                rc |= libc::posix_spawn_file_actions_adddup2(actions, *fd, high + i as RawFd);
            }
            for i in 0..n {
                rc |= libc::posix_spawn_file_actions_adddup2(actions, high + i, i);
            }
        }
        rc
    })
}

/// `posix_spawn` of `/proc/self/exe` with `argv` (NUL-terminated) and the
/// file actions `add` makes (non-zero: it failed), in a process group of
/// its own, with an empty signal mask, SIGPIPE at its default and an empty
/// environment: a stage, or a [`super::spawner`].
pub(super) fn spawn_self(
    argv: &[*const libc::c_char],
    add: impl FnOnce(&mut libc::posix_spawn_file_actions_t) -> libc::c_int,
) -> io::Result<i32> {
    if argv.last().is_none_or(|p| !p.is_null()) {
        return Err(io::Error::other("argv must end with a null pointer"));
    }
    let mut pid: libc::pid_t = 0;
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: the file actions and attributes are initialized before use
    // and destroyed after; posix_spawn(3) reads the NUL-terminated path,
    // argv (checked above) and envp on this frame and writes the pid.
    let rc = unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawnattr_init(&mut attr);
        let mut rc = add(&mut actions);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        rc |= libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        );
        rc |= libc::posix_spawnattr_setpgroup(&mut attr, 0);
        rc |= libc::posix_spawnattr_setsigmask(&mut attr, &empty);
        rc |= libc::posix_spawnattr_setsigdefault(&mut attr, &pipe);
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                c"/proc/self/exe".as_ptr(),
                &actions,
                &attr,
                argv.as_ptr().cast(),
                envp.as_ptr().cast(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    match rc {
        0 => Ok(pid),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A close-on-exec pipe: its read end, its write end.
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two descriptors on this stack frame.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A stage's process as the worker holds it: killed (and reaped later)
/// when dropped before it exited, as `kill_on_drop` did.
struct Proc {
    pidfd: Option<AsyncFd<OwnedFd>>,
    reaped: bool,
}

impl Proc {
    fn watch(pidfd: OwnedFd) -> io::Result<Proc> {
        // SAFETY: an `OwnedFd` stays open and names the same descriptor
        // until it is dropped, with the `AsyncFd` that owns it.
        let fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Proc {
            pidfd: Some(fd),
            reaped: false,
        })
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(fd) = &self.pidfd else {
            return Err(io::Error::other("already reaped"));
        };
        loop {
            let mut ready = fd.readable().await?;
            match reap(fd.get_ref(), WaitPidFlag::WNOHANG)? {
                Some(status) => {
                    self.reaped = true;
                    return Ok(status);
                }
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let Some(fd) = self.pidfd.take() else {
            return;
        };
        // SAFETY: pidfd_send_signal(2) on a pidfd this value owns.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if let Ok(Some(_)) = reap(fd.get_ref(), WaitPidFlag::WNOHANG) {
            return;
        }
        // Dead soon: reaped by a task (or a thread, outside a runtime).
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    while let Ok(mut ready) = fd.readable().await {
                        match reap(fd.get_ref(), WaitPidFlag::WNOHANG) {
                            Ok(None) => ready.clear_ready(),
                            _ => break,
                        }
                    }
                });
            }
            Err(_) => {
                std::thread::spawn(move || reap(fd.get_ref(), WaitPidFlag::empty()));
            }
        }
    }
}

/// waitid(2) on a pidfd: its status once exited.
fn reap(pidfd: &OwnedFd, flags: WaitPidFlag) -> io::Result<Option<ExitStatus>> {
    use std::os::fd::AsFd;
    loop {
        return match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED | flags) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::from_raw((code & 0xff) << 8))),
            Ok(WaitStatus::Signaled(_, sig, core)) => Ok(Some(ExitStatus::from_raw(
                sig as i32 | if core { 0x80 } else { 0 },
            ))),
            Ok(_) => Ok(None),
            Err(nix::Error::EINTR) => continue,
            Err(e) => Err(io::Error::from(e)),
        };
    }
}

/// `dispatch __stage`: takes the steps of its spec and executes the tool;
/// never returns.
pub fn main() -> ! {
    let Err(e) = stage();
    let mut said = e.raw_os_error().unwrap_or(0).to_ne_bytes().to_vec();
    said.extend_from_slice(e.to_string().as_bytes());
    // SAFETY: write(2) of a buffer on this frame, then _exit(2).
    unsafe {
        libc::write(ERROR_FD, said.as_ptr().cast(), said.len());
        libc::_exit(127)
    }
}

fn stage() -> io::Result<std::convert::Infallible> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    // Executed as `/proc/self/exe`, it would show as `exe` (the keeper and
    // the sandbox's outer processes keep this name).
    let _ = nix::sys::prctl::set_name(c"dispatch-stage");
    let mut json = Vec::new();
    {
        // SAFETY: the descriptor the worker put at SPEC_FD, owned here.
        let mut file = unsafe { std::fs::File::from_raw_fd(SPEC_FD) };
        file.read_to_end(&mut json)?;
    }
    let spec: Spec<StepsIn> = serde_json::from_slice(&json).map_err(io::Error::other)?;
    // SAFETY: getppid(2) takes no arguments.
    if unsafe { libc::getppid() } != spec.parent {
        return Err(io::Error::other("its supervisor is gone"));
    }
    let end = FIRST_PASSED as libc::c_uint + spec.passed as libc::c_uint;
    // SAFETY: close_range(2) takes no pointers. The copies above the passed
    // descriptors go now; the rest are closed when the tool executes.
    unsafe {
        libc::close_range(end, libc::c_uint::MAX, 0);
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        );
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    let fd = |i: usize| FIRST_PASSED + i as RawFd;
    let entry = spec.entry.map(fd);
    let keeper = spec.keeper.map(|k| Keeper::from_spec(k, fd)).transpose()?;
    let steps = spec.steps.map(|s| Steps {
        uid: s.uid,
        gid: s.gid,
        view: s.view,
        userns: s.userns,
        // SAFETY: received for the ruleset alone.
        landlock: s.landlock.map(|i| unsafe { OwnedFd::from_raw_fd(fd(i)) }),
        tether: s
            .tether
            .map(|(pipe, deadline)| Tie::Fds(fd(pipe), fd(deadline))),
        // SAFETY: received for the network namespace alone.
        netns: s.netns.map(|i| unsafe { OwnedFd::from_raw_fd(fd(i)) }),
    });
    // With a view, the sandbox's last process executes the tool itself
    // (see `shared_vm`): what it executes, exactly as `cmd` would.
    let exec = match steps.as_ref().is_some_and(|s| s.view.is_some()) {
        true => Some(super::shared_vm::Exec::new(
            OsStr::from_bytes(&spec.program),
            spec.args.iter().map(|a| OsStr::from_bytes(a)),
            spec.env
                .iter()
                .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))),
        )?),
        false => None,
    };
    let mut cmd = std::process::Command::new(OsString::from_vec(spec.program));
    cmd.args(spec.args.into_iter().map(OsString::from_vec))
        .env_clear()
        .envs(
            spec.env
                .into_iter()
                .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v))),
        )
        .current_dir(OsString::from_vec(spec.cwd));
    // SAFETY: this process has one thread; the hook runs the steps the
    // forked child took (see the module docs), in the same order: the
    // parcel's write powers dropped and the parent-death signal, the
    // group entered, the keeper, the sandbox.
    unsafe {
        cmd.pre_exec(move || {
            dispatch_agent::tools::powers::drop_write_powers();
            if let Some(fd) = entry
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(io::Error::last_os_error());
            }
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)?;
            if let Some(k) = &keeper {
                k.enter_forked()?;
            }
            if let Some(s) = &steps {
                super::child::enter(s, exec.as_ref())?;
            }
            Ok(())
        });
    }
    Err(cmd.exec())
}
