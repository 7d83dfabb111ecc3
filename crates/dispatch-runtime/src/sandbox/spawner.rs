//! The *spawner*: one small process per worker or helper that starts every
//! stage (see [`super::stage`]) by forking itself, instead of an `execve`
//! of the whole `dispatch` binary for each LOCAL tool call (issue #38).
//!
//! A stage started with `posix_spawn(3)` paid for a program start at every
//! tool call: the 90 MB binary mapped, its ~61,000 relative relocations
//! applied (the pages they write copied), the runtime set up — about
//! 1.6 ms of CPU before the stage took its first step. The spawner pays
//! that once. It is `dispatch __spawner <parent>`, started by
//! `posix_spawn(3)` like a stage (an empty environment, its own process
//! group, an empty signal mask), and does nothing but wait on a
//! `SOCK_SEQPACKET` socket for requests: the descriptors a stage gets as
//! its 0, 1, 2, … (the same list a `posix_spawn` of the stage would have
//! mapped), passed with `SCM_RIGHTS`. For each it `clone3(2)`s itself with
//! `CLONE_PARENT | CLONE_PIDFD`, and answers with the new process's pid and
//! pidfd. The new process puts the descriptors in place, enters its own
//! process group and runs the stage's `main`: from there on it *is* a stage,
//! with the same steps, the same error pipe and the same checks.
//!
//! `CLONE_PARENT` keeps the process tree a stage had: the new process's
//! parent is the worker (the spawner's parent), not the spawner. So the
//! worker waits for it with `waitid(2)` on its pidfd as before, its
//! parent-death signal is the worker's (the thread that started the
//! spawner: a thread of its own here, living as long as the process), and
//! the stage's check that its parent is the worker holds. Killing the
//! spawner takes no tool with it.
//!
//! The spawner's own life: a parent-death signal (it dies with the worker),
//! its parent checked after that (a worker gone before the `prctl` is
//! noticed), a socket whose close ends it, and no descriptor but that
//! socket and the one request it is handling. Whenever the worker cannot
//! use it (it died, it does not answer within [`ANSWER_WITHIN`], a reply is
//! malformed) the worker kills and reaps it, starts that call's stage with
//! `posix_spawn(3)` as before, and starts a new spawner at the next call.
//! A process the spawner made whose pidfd did not arrive is killed and
//! reaped by its pid, which is safe: it is the worker's child, so its pid
//! is not reused before the worker reaps it.
//!
//! It needs `clone3(2)` (Linux 5.3) with `CLONE_PIDFD`: where the kernel
//! lacks it or a seccomp filter refuses it (`ENOSYS`, `EPERM`), the first
//! call finds out, and every stage is executed from then on.
//!
//! `DISPATCH_SPAWN=stage` turns the spawner off (a stage is executed per
//! call); `DISPATCH_SPAWN=fork` turns off both.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// `dispatch __spawner <parent pid>`: the argument that makes the binary a
/// spawner.
pub const SPAWNER_ARG: &str = "__spawner";

/// The spawner's end of its socket.
const SOCKET_FD: RawFd = 3;
/// The most descriptors one request passes (a stage takes five and the
/// steps' few: a tether, a ruleset, a group, a network namespace).
const MAX_FDS: usize = 32;
/// The index of a stage's error pipe among its descriptors (its 4).
const ERRORS: usize = 4;
/// How long the worker waits for an answer before it gives the spawner up.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The worker's hold on its spawner.
struct Spawner {
    socket: OwnedFd,
    pid: i32,
}

static SPAWNER: Mutex<Option<Spawner>> = Mutex::new(None);
/// Set when this kernel (or its seccomp filter) refuses the spawner's
/// `clone3`.
static UNUSABLE: AtomicBool = AtomicBool::new(false);

/// Whether stages are started through a spawner here.
fn wanted() -> bool {
    !UNUSABLE.load(Ordering::Relaxed)
        && !std::env::var(super::stage::SPAWN_ENV)
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("stage"))
}

/// Starts a stage whose descriptors 0, 1, 2, … are `sources`: its pid and
/// pidfd. `None` when there is no spawner to do it (the caller starts the
/// stage itself); an error when the spawner could not make the process.
pub(super) fn spawn(sources: &[RawFd]) -> Option<io::Result<(i32, OwnedFd)>> {
    if !wanted() || sources.len() > MAX_FDS {
        return None;
    }
    let mut held = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if held.is_none() {
        *held = start().ok();
    }
    let spawner = held.as_ref()?;
    match ask(spawner, sources) {
        // `clone3` missing (before Linux 5.3) or refused by a seccomp
        // filter (container runtimes' default profiles say ENOSYS): stages
        // are executed from now on.
        Ok(Err(e)) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            UNUSABLE.store(true, Ordering::Relaxed);
        }
        Ok(answer) => return Some(answer),
        Err(_) => {}
    }
    // Given up: killed and reaped (it is this process's child).
    if let Some(s) = held.take() {
        super::stage::kill_child(s.pid);
    }
    None
}

/// One request and its answer. `Err` is the transport failing (the
/// spawner is given up); `Ok(Err)` the spawner's own answer: it could not
/// make the process.
fn ask(spawner: &Spawner, sources: &[RawFd]) -> io::Result<io::Result<(i32, OwnedFd)>> {
    let count = (sources.len() as u32).to_ne_bytes();
    let rights = [ControlMessage::ScmRights(sources)];
    sendmsg::<()>(
        spawner.socket.as_raw_fd(),
        &[IoSlice::new(&count)],
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    let mut answer = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (bytes, truncated, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut answer)];
        match recvmsg::<()>(
            spawner.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        // SAFETY: received just now, owned by nothing else.
                        fds.extend(
                            got.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                break (msg.bytes, truncated, fds);
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if bytes != answer.len() {
        return Err(io::Error::other("the spawner hung up"));
    }
    let pid = i32::from_ne_bytes(answer);
    if pid <= 0 {
        return Ok(Err(io::Error::from_raw_os_error(-pid)));
    }
    match fds.into_iter().next() {
        Some(pidfd) if !truncated => Ok(Ok((pid, pidfd))),
        _ => {
            // The process exists but cannot be watched: it goes, by its
            // pid (the worker's child: not reused until reaped here).
            super::stage::kill_child(pid);
            Ok(Err(io::Error::from_raw_os_error(libc::EMFILE)))
        }
    }
}

/// Starts a spawner, from a thread that lives as long as this process (the
/// spawner's parent-death signal, and its stages', is that thread's exit).
fn start() -> io::Result<Spawner> {
    type Reply = mpsc::Sender<io::Result<Spawner>>;
    static STARTER: OnceLock<Option<mpsc::Sender<Reply>>> = OnceLock::new();
    let starter = STARTER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Reply>();
        std::thread::Builder::new()
            .name("dispatch-spawner".into())
            .spawn(move || {
                // Never ends: the static holds the other end.
                for reply in rx {
                    let _ = reply.send(start_here());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(starter) = starter else {
        return Err(io::Error::other("no thread to start the spawner from"));
    };
    let (tx, rx) = mpsc::channel();
    starter
        .send(tx)
        .map_err(|_| io::Error::other("the spawner's thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner's thread is gone"))?
}

fn start_here() -> io::Result<Spawner> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let timeout = libc::timeval {
        tv_sec: ANSWER_WITHIN.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt(2) reads a timeval from this frame.
    let rc = unsafe {
        libc::setsockopt(
            ours.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let parent =
        std::ffi::CString::new(std::process::id().to_string()).map_err(io::Error::other)?;
    let pid = posix_spawn_spawner(theirs.as_raw_fd(), &parent)?;
    Ok(Spawner { socket: ours, pid })
}

/// `posix_spawn` of `/proc/self/exe __spawner <parent>` (see
/// [`super::stage::spawn_self`]): `socket` as its descriptor 3,
/// `/dev/null` as 0 and 1 (2 stays this process's).
fn posix_spawn_spawner(socket: RawFd, parent: &std::ffi::CStr) -> io::Result<i32> {
    let high = socket.max(SOCKET_FD) + 1;
    let argv = [
        c"dispatch".as_ptr(),
        c"__spawner".as_ptr(),
        parent.as_ptr(),
        std::ptr::null(),
    ];
    super::stage::spawn_self(&argv, |actions| {
        // SAFETY: file actions on the initialized `actions`, reading the
        // NUL-terminated path.
        unsafe {
            let mut rc = libc::posix_spawn_file_actions_adddup2(actions, socket, high);
            rc |= libc::posix_spawn_file_actions_adddup2(actions, high, SOCKET_FD);
            rc |= libc::posix_spawn_file_actions_addclose(actions, high);
            for fd in [0, 1] {
                rc |= libc::posix_spawn_file_actions_addopen(
                    actions,
                    fd,
                    c"/dev/null".as_ptr(),
                    libc::O_RDWR,
                    0,
                );
            }
            rc
        }
    })
}

/// `clone3(2)`'s arguments, the first version's 64 bytes.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// `dispatch __spawner <parent>`: answers requests until its socket
/// closes; never returns.
pub fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dispatch-spawner: {e}");
            1
        }
    };
    // SAFETY: _exit(2) takes a status.
    unsafe { libc::_exit(code) }
}

fn serve() -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    let _ = nix::sys::prctl::set_name(c"dispatch-spawner");
    let _ = nix::sys::prctl::set_dumpable(false);
    let parent: i32 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other("usage: dispatch __spawner <parent pid>"))?;
    // SAFETY: getppid(2) takes no arguments.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::other("its worker is gone"));
    }
    // SAFETY: close_range(2) takes no pointers: nothing but 0-2 and the
    // socket is this process's.
    unsafe { libc::close_range(SOCKET_FD as libc::c_uint + 1, libc::c_uint::MAX, 0) };
    loop {
        let mut count = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut fds = Vec::new();
        let (bytes, truncated) = {
            let mut iov = [IoSliceMut::new(&mut count)];
            let msg = match recvmsg::<()>(
                SOCKET_FD,
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(got) = c {
                    // SAFETY: received just now, owned by nothing else.
                    fds.extend(
                        got.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            (msg.bytes, msg.flags.contains(MsgFlags::MSG_CTRUNC))
        };
        if bytes == 0 {
            return Ok(()); // The worker closed its end.
        }
        let whole =
            bytes == count.len() && !truncated && u32::from_ne_bytes(count) as usize == fds.len();
        let answer = if whole {
            clone_stage(&fds)
        } else {
            Err(libc::EINVAL)
        };
        drop(fds);
        let (pid, pidfd) = match answer {
            Ok((pid, pidfd)) => (pid, Some(pidfd)),
            Err(errno) => (-errno, None),
        };
        let bytes = pid.to_ne_bytes();
        let passed: Vec<RawFd> = pidfd.iter().map(AsRawFd::as_raw_fd).collect();
        let rights = [ControlMessage::ScmRights(&passed)];
        let cmsgs: &[ControlMessage] = if passed.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            SOCKET_FD,
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
    }
}

/// Makes the stage: a child of the worker (`CLONE_PARENT`) with `fds` as
/// its 0, 1, 2, …; its pid and pidfd, or an errno.
fn clone_stage(fds: &[OwnedFd]) -> Result<(i32, OwnedFd), i32> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_PARENT | libc::CLONE_PIDFD) as u64,
        pidfd: (&raw mut pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        // With CLONE_PARENT the kernel takes the spawner's own (SIGCHLD
        // to the worker) and refuses any other value.
        exit_signal: 0,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: clone3(2) without CLONE_VM is a fork: the child gets a copy
    // of this single-threaded process and runs on from here, and it only
    // sets its descriptors up and becomes a stage, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        0 => become_stage(fds),
        p if p < 0 => Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)),
        // SAFETY: written by the kernel for CLONE_PIDFD, owned here.
        p => Ok((p as i32, unsafe { OwnedFd::from_raw_fd(pidfd) })),
    }
}

/// In the new process: `fds` onto 0, 1, 2, …, its own process group, then
/// the stage's `main`.
fn become_stage(fds: &[OwnedFd]) -> ! {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let n = raw.len() as RawFd;
    // Copies above every source and target first, so that no move
    // overwrites a source still to be moved (the stage closes them).
    let high = raw.iter().copied().max().unwrap_or(0).max(n).max(SOCKET_FD) + 1;
    // SAFETY: dup2(2) and setpgid(2) on this process's own descriptors
    // and itself; on failure the errno goes to the stage's error pipe
    // (its descriptor 4, see the stage) and the process exits.
    unsafe {
        for (i, fd) in raw.iter().enumerate() {
            if libc::dup2(*fd, high + i as RawFd) < 0 {
                fail(raw.get(ERRORS).copied());
            }
        }
        let errors = (raw.len() > ERRORS).then_some(high + ERRORS as RawFd);
        for i in 0..n {
            if libc::dup2(high + i, i) < 0 {
                fail(errors);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(errors);
        }
    }
    super::stage::main()
}

/// Says the last errno on the error pipe, if there is one, and exits.
fn fail(errors: Option<RawFd>) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: write(2) of a buffer on this frame, then _exit(2).
    unsafe {
        if let Some(fd) = errors {
            libc::write(fd, errno.to_ne_bytes().as_ptr().cast(), 4);
        }
        libc::_exit(127)
    }
}
