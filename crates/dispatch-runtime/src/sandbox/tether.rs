//! A sandboxed process tree lives and dies with its supervisor and with
//! its run's lease, whatever happens to the process that supervises it.
//!
//! The spawned process of a sandboxed agent (`C0`, see [`super::child`])
//! stays outside the agent's PID namespace and does nothing but wait; it
//! holds two things made here, before the fork:
//!
//! - the read end of a pipe whose only writer is this process (the helper
//!   or worker that supervises the run): when this process dies, however it
//!   dies (`kill -9`, the OOM killer), the pipe reports the hang-up and `C0`
//!   kills the namespace's init, which takes every process of the run with
//!   it. Nothing of a run survives its supervisor;
//! - a deadline on the system's monotonic clock, shared through a memfd,
//!   which a cluster worker moves forward each time the run's lease is
//!   renewed (to the moment it would kill the agent itself, five sixths of
//!   the lease after the renewal was sent, see `self_fence` in
//!   dispatch-server). When it passes, `C0` kills the tree: a worker that is
//!   frozen (SIGSTOP, a long pause) cannot have its agent run on beside the
//!   run's next attempt. Local helpers hold no lease: their deadline is
//!   never.
//!
//! The margin between that deadline and the lease's expiry in the
//! database (a sixth of the lease, 5 s by default) is the one self-fencing
//! documents: wall clocks of two machines disagreeing, scheduling delay and
//! the kill itself. A whole machine stopped (a VM paused with its monotonic
//! clock) stops `C0` too: only the database's lease covers that.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

/// A deadline that never comes.
pub(super) const NEVER: u64 = u64::MAX;

/// The tether's two descriptors as a process holds them: the attempt's
/// own (made here), or received by a stage process (see [`super::stage`]).
pub(super) enum Tie {
    Here(Arc<Tether>),
    Fds(RawFd, RawFd),
}

impl Tie {
    /// The pipe's read end and the deadline's memfd.
    pub(super) fn fds(&self) -> (RawFd, RawFd) {
        match self {
            Tie::Here(t) => t.fds(),
            Tie::Fds(pipe, deadline) => (*pipe, *deadline),
        }
    }
}

/// One attempt's tether (every process it starts shares it).
pub(super) struct Tether {
    read: OwnedFd,
    /// Kept open as long as the attempt's plan: its close is the hang-up.
    _write: OwnedFd,
    deadline: File,
    /// The last deadline written (not to write the same one again).
    written: Mutex<u64>,
    /// The run it is registered under (a worker's), to leave the registry.
    run: Option<String>,
}

impl Drop for Tether {
    fn drop(&mut self) {
        if let Some(run) = &self.run {
            let mut all = tethers();
            // A later attempt of the run may have replaced this one's entry.
            if all.get(run).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
                all.remove(run);
            }
        }
    }
}

/// The lease of the runs this process executes: set by a worker.
static KILL_AFTER: OnceLock<Duration> = OnceLock::new();

/// The tethers of the attempts running here, by run id.
static TETHERS: OnceLock<Mutex<HashMap<String, Weak<Tether>>>> = OnceLock::new();

fn tethers() -> std::sync::MutexGuard<'static, HashMap<String, Weak<Tether>>> {
    TETHERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// This process runs agents under leases: a new attempt's tree is killed
/// `kill_after` from its start unless [`lease_renewed`] moves that on.
pub fn hold_leases(kill_after: Duration) {
    let _ = KILL_AFTER.set(kill_after);
}

/// The lease of `run` was renewed: its tree may live until `kill_at` (a
/// deadline earlier than the one already set is taken too: the lease's
/// holder knows best).
pub fn lease_renewed(run: &str, kill_at: Instant) {
    let tether = tethers().get(run).and_then(Weak::upgrade);
    if let Some(t) = tether {
        t.set(monotonic_at(kill_at));
    }
}

/// `at` on the monotonic clock, in nanoseconds.
fn monotonic_at(at: Instant) -> u64 {
    let now_instant = Instant::now();
    let now = monotonic_now();
    match at.checked_duration_since(now_instant) {
        Some(ahead) => now.saturating_add(ahead.as_nanos() as u64),
        None => now.saturating_sub(now_instant.duration_since(at).as_nanos() as u64),
    }
}

/// Now on CLOCK_MONOTONIC (the clock `Instant` reads), in nanoseconds.
pub(super) fn monotonic_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) fills the timespec on this stack frame.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl Tether {
    /// A tether for an attempt of `run`.
    pub(super) fn new(run: &str) -> std::io::Result<Arc<Tether>> {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) fills the two descriptors on this stack frame.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both were just opened and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: memfd_create(2) takes a NUL-terminated name and flags.
        let fd = unsafe { libc::memfd_create(c"dispatch-lease".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nothing else.
        let deadline = unsafe { File::from_raw_fd(fd) };
        let first = match KILL_AFTER.get() {
            Some(after) => monotonic_now().saturating_add(after.as_nanos() as u64),
            None => NEVER,
        };
        deadline.write_all_at(&first.to_ne_bytes(), 0)?;
        let leased = KILL_AFTER.get().is_some();
        let tether = Arc::new(Tether {
            read,
            _write: write,
            deadline,
            written: Mutex::new(first),
            run: leased.then(|| run.to_string()),
        });
        if leased {
            tethers().insert(run.to_string(), Arc::downgrade(&tether));
        }
        Ok(tether)
    }

    fn set(&self, deadline: u64) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if *written != deadline
            && self
                .deadline
                .write_all_at(&deadline.to_ne_bytes(), 0)
                .is_ok()
        {
            *written = deadline;
        }
    }

    /// The descriptors `C0` keeps: the pipe's read end and the deadline.
    pub(super) fn fds(&self) -> (RawFd, RawFd) {
        (self.read.as_raw_fd(), self.deadline.as_raw_fd())
    }
}
