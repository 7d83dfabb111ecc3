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
//! A tether is made when a process is started, not with the attempt: a
//! native agent's tools start and end many times while the attempt waits
//! on its model, and three descriptors an idle run (its pipe's two ends,
//! the memfd) were half of what a worker holding thousands of runs had
//! open (issue #38). A [`Slot`] is the attempt's place for its tether: it
//! keeps the run's deadline between tethers, makes one when a process
//! starts, and lets it go when the last process that holds it has ended
//! (for a process started through a stage); the other spawns pin it for
//! the attempt's life.
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
/// own (made when a process starts: [`Slot`]), or received by a stage
/// process (see [`super::stage`]).
pub(super) enum Tie {
    Lazy(Slot),
    Fds(RawFd, RawFd),
}

impl Tie {
    /// A tie whose tether is made when a process starts (see [`Slot`]).
    pub(super) fn lazy(run: &str) -> Tie {
        Tie::Lazy(Slot::new(run))
    }

    /// The pipe's read end and the deadline's memfd; `None` for a slot no
    /// tether was pinned in (async-signal-safe: read in a forked child).
    pub(super) fn fds(&self) -> Option<(RawFd, RawFd)> {
        match self {
            Tie::Lazy(slot) => slot.pinned.get().map(|t| t.fds()),
            Tie::Fds(pipe, deadline) => Some((*pipe, *deadline)),
        }
    }

    /// The tether for a process about to start, held as long as that
    /// process may live (`None`: received descriptors, the caller's own).
    pub(super) fn hold(&self) -> std::io::Result<Option<Arc<Tether>>> {
        match self {
            Tie::Lazy(slot) => slot.hold().map(Some),
            Tie::Fds(..) => Ok(None),
        }
    }

    /// Makes sure [`Tie::fds`] answers for the rest of the attempt (for
    /// spawns whose child reads it after the fork).
    pub(super) fn pin(&self) -> std::io::Result<()> {
        if let Tie::Lazy(slot) = self
            && slot.pinned.get().is_none()
        {
            let t = slot.hold()?;
            let _ = slot.pinned.set(t);
        }
        Ok(())
    }
}

/// One attempt's place for its tether: the run's deadline lives here
/// between tethers (see the module docs).
pub(super) struct Slot {
    /// The run it is registered under, when this process holds leases.
    run: Option<String>,
    /// Its registration, to leave the registry (a later attempt of the
    /// run may have its own).
    token: u64,
    /// The tether processes hold now, if any.
    live: Mutex<Weak<Tether>>,
    /// A tether kept for the attempt's life (see [`Tie::pin`]).
    pinned: OnceLock<Arc<Tether>>,
}

impl Slot {
    fn new(run: &str) -> Slot {
        let leased = KILL_AFTER.get().is_some();
        let token = next_token();
        if leased {
            let deadline = first_deadline();
            let mut all = tethers();
            // Another tether of the run already there (a keeper's) follows
            // this slot.
            let e = all.entry(run.to_string()).or_default();
            (e.token, e.deadline) = (token, deadline);
        }
        Slot {
            run: leased.then(|| run.to_string()),
            token,
            live: Mutex::new(Weak::new()),
            pinned: OnceLock::new(),
        }
    }

    /// The live tether, or a new one at the run's deadline.
    fn hold(&self) -> std::io::Result<Arc<Tether>> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = live.upgrade() {
            return Ok(t);
        }
        let t = match &self.run {
            None => Tether::make(NEVER, None)?,
            Some(run) => {
                let mut all = tethers();
                let deadline = match all.get(run) {
                    Some(e) if e.token == self.token => e.deadline,
                    // Replaced by a later attempt of the run: this one's
                    // lease is gone.
                    _ => 0,
                };
                let t = Tether::make(deadline, None)?;
                if let Some(e) = all.get_mut(run).filter(|e| e.token == self.token) {
                    e.follow(&t);
                }
                t
            }
        };
        *live = Arc::downgrade(&t);
        Ok(t)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(run) = &self.run {
            let mut all = tethers();
            if all.get(run).is_some_and(|e| e.token == self.token) {
                all.remove(run);
            }
        }
    }
}

/// One attempt's tether (every process it starts shares it).
pub(super) struct Tether {
    read: OwnedFd,
    /// Kept open as long as the processes it ties may live: its close is
    /// the hang-up.
    _write: OwnedFd,
    deadline: File,
    /// The last deadline written (not to write the same one again).
    written: Mutex<u64>,
    /// The run it is registered under, for an eager one (a keeper's), to
    /// leave the registry.
    run: Option<(String, u64)>,
}

impl Drop for Tether {
    fn drop(&mut self) {
        if let Some((run, token)) = &self.run {
            let mut all = tethers();
            // A later attempt of the run may have replaced this one's entry.
            if all.get(run).is_some_and(|e| e.token == *token) {
                all.remove(run);
            }
        }
    }
}

/// The lease of the runs this process executes: set by a worker.
static KILL_AFTER: OnceLock<Duration> = OnceLock::new();

/// What the registry knows of one attempt: its deadline and its live
/// tethers.
#[derive(Default)]
struct Entry {
    token: u64,
    deadline: u64,
    live: Vec<Weak<Tether>>,
}

impl Entry {
    /// `t`'s deadline moves with this attempt's renewals from now on.
    fn follow(&mut self, t: &Arc<Tether>) {
        self.live.retain(|w| w.strong_count() > 0);
        self.live.push(Arc::downgrade(t));
    }
}

/// The attempts running here under leases, by run id.
static TETHERS: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();

fn tethers() -> std::sync::MutexGuard<'static, HashMap<String, Entry>> {
    TETHERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn next_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A new attempt's deadline: `kill_after` from now under leases, else never.
fn first_deadline() -> u64 {
    match KILL_AFTER.get() {
        Some(after) => monotonic_now().saturating_add(after.as_nanos() as u64),
        None => NEVER,
    }
}

/// This process runs agents under leases: a new attempt's tree is killed
/// `kill_after` from its start unless [`lease_renewed`] moves that on.
pub fn hold_leases(kill_after: Duration) {
    let _ = KILL_AFTER.set(kill_after);
}

/// The lease of `run` was renewed: its tree may live until `kill_at` (a
/// deadline earlier than the one already set is taken too: the lease's
/// holder knows best). Kept for the tethers made later in the attempt.
pub fn lease_renewed(run: &str, kill_at: Instant) {
    let at = monotonic_at(kill_at);
    let live: Vec<Arc<Tether>> = match tethers().get_mut(run) {
        Some(e) => {
            e.deadline = at;
            e.live.iter().filter_map(Weak::upgrade).collect()
        }
        None => Vec::new(),
    };
    // Set (and possibly dropped) outside the registry's lock.
    for t in live {
        t.set(at);
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
    /// A tether for an attempt of `run`, for its whole life (a keeper's).
    pub(super) fn new(run: &str) -> std::io::Result<Arc<Tether>> {
        if KILL_AFTER.get().is_none() {
            return Tether::make(NEVER, None);
        }
        let mut all = tethers();
        // The attempt's slot keeps the deadline: this one follows it.
        if let Some(e) = all.get_mut(run) {
            let t = Tether::make(e.deadline, None)?;
            e.follow(&t);
            return Ok(t);
        }
        let (token, deadline) = (next_token(), first_deadline());
        let t = Tether::make(deadline, Some((run.to_string(), token)))?;
        let mut e = Entry {
            token,
            deadline,
            live: Vec::new(),
        };
        e.follow(&t);
        all.insert(run.to_string(), e);
        Ok(t)
    }

    /// A pipe and a memfd holding `deadline`; `run`: the registration it
    /// ends when dropped.
    fn make(deadline: u64, run: Option<(String, u64)>) -> std::io::Result<Arc<Tether>> {
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
        let file = unsafe { File::from_raw_fd(fd) };
        file.write_all_at(&deadline.to_ne_bytes(), 0)?;
        Ok(Arc::new(Tether {
            read,
            _write: write,
            deadline: file,
            written: Mutex::new(deadline),
            run,
        }))
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
