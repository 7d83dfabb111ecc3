//! Self-fencing: a worker that cannot renew a run's lease stops the run's
//! agent before the lease can expire for anyone else, and from then on never
//! writes for that run. It measures on its own monotonic clock, from the
//! moment the last renewal that succeeded was *sent*.
//!
//! The times, as fractions of the lease `L` (30 s by default):
//!
//! | after the last renewal sent | what happens |
//! |---|---|
//! | every `L/6` (5 s) | the worker renews (a failed renewal is retried every `L/30`, 1 s) |
//! | `2L/3` (20 s) | SIGTERM to the agent's process group (a native agent's loop is cancelled); the run's writes are refused here from now on |
//! | `5L/6` (25 s) | SIGKILL to the group; the run's task is dropped |
//! | `L` (30 s) | the lease expires in the database, and another worker may take the run |
//!
//! The database's expiry was computed from this worker's wall clock when
//! the renewal was sent, so it never comes earlier than `L` after the
//! moment measured here. The last `L/6` (5 s) is the margin for the wall
//! clocks of two workers disagreeing (the sweeper compares the expiry with
//! its own), for scheduling delays and for the kill itself: keep worker
//! clocks within a few seconds of each other (NTP), or raise the lease.
//!
//! An agent that already exited is no execution any more: only its result is
//! unsaved. It is left alone, and its final write keeps retrying under its
//! fencing token, which the database refuses once someone else claimed the
//! run (see [`crate::fenced`]).
//!
//! The watchdog is an OS thread of its own: a store call that hangs in a
//! partition blocks the worker's async loop, never the fencing. The
//! renewals come from another thread with its own runtime and database
//! connection ([`crate::worker::renewer`]): runs that saturate the worker's
//! runtime delay neither the renewals nor the fencing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dispatch_core::RunId;
use dispatch_runtime::os;
use nix::sys::signal::Signal;
use tokio::task::AbortHandle;

use crate::fenced::FencedStore;

/// The schedule of renewals and self-fencing for a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    pub lease: Duration,
}

impl LeaseTimes {
    pub fn new(lease: Duration) -> Self {
        LeaseTimes { lease }
    }

    /// How often leases are renewed.
    pub fn renew_every(&self) -> Duration {
        (self.lease / 6).max(Duration::from_millis(10))
    }

    /// How soon a failed renewal is tried again.
    pub fn retry_every(&self) -> Duration {
        (self.lease / 30).max(Duration::from_millis(10))
    }

    /// SIGTERM to a running agent this long after the last renewal sent.
    pub fn term_after(&self) -> Duration {
        self.lease * 2 / 3
    }

    /// SIGKILL this long after it.
    pub fn kill_after(&self) -> Duration {
        self.lease * 5 / 6
    }
}

/// Where a run's lease stands for its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Renewed in time: the holder runs it and writes for it.
    Held,
    /// Not renewed in time: its agent is being stopped, its writes refused.
    Stopping,
    /// Given up: the agent killed, the task dropped, or the lease lost.
    Gone,
}

/// One run's lease as its holder sees it, on the monotonic clock.
#[derive(Debug)]
pub struct LeaseClock {
    state: Mutex<(Instant, Phase)>,
    /// How long after the last renewal sent the holder may still count on
    /// the lease (see [`LeaseClock::current`]); unbounded unless set.
    lasts: Duration,
}

impl LeaseClock {
    /// A lease taken by a claim sent at `sent`.
    pub fn new(sent: Instant) -> Self {
        LeaseClock {
            state: Mutex::new((sent, Phase::Held)),
            lasts: Duration::MAX,
        }
    }

    /// Counted on until `times`' kill deadline after each renewal sent: the
    /// lease cannot have expired for another worker before then.
    pub fn of(sent: Instant, times: LeaseTimes) -> Self {
        LeaseClock {
            lasts: times.kill_after(),
            ..LeaseClock::new(sent)
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Instant, Phase)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A renewal sent at `sent` succeeded. Too late once fencing began: a
    /// stopped agent is not restarted.
    pub fn renewed(&self, sent: Instant) {
        let mut state = self.lock();
        if state.1 == Phase::Held && sent > state.0 {
            state.0 = sent;
        }
    }

    /// The holder may write for the run.
    pub fn writable(&self) -> bool {
        self.phase() == Phase::Held
    }

    pub fn phase(&self) -> Phase {
        self.lock().1
    }

    /// No other worker can hold the run yet: the lease is not given up, and
    /// the last renewal was sent less than the kill deadline ago. Unlike
    /// [`LeaseClock::writable`] this turns false on time alone, also for a
    /// run whose agent exited and whose result still waits to be saved
    /// (those writes are fenced by the database; a file two workers share
    /// is not).
    pub fn current(&self) -> bool {
        let (sent, phase) = *self.lock();
        phase != Phase::Gone && sent.elapsed() < self.lasts
    }

    /// The lease is known lost (a renewal said so): no more writes.
    pub fn lose(&self) {
        self.lock().1 = Phase::Gone;
    }

    fn since_renewal(&self) -> Duration {
        self.lock().0.elapsed()
    }

    fn set(&self, phase: Phase) {
        self.lock().1 = phase;
    }
}

/// A run the watchdog looks after.
struct Watched {
    store: Arc<FencedStore>,
    task: AbortHandle,
    /// Its agent had exited when fencing was due: said once.
    noted: bool,
}

type Runs = Arc<Mutex<HashMap<RunId, Watched>>>;

/// The thread that stops the agents of runs whose lease was not renewed.
pub struct Watchdog {
    runs: Runs,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread; `worker` names the worker in its log lines.
    pub fn start(times: LeaseTimes, worker: String) -> Watchdog {
        let runs: Runs = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tick = (times.lease / 60).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let (r, s) = (runs.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("lease-watchdog".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let mut runs = r.lock().unwrap_or_else(PoisonError::into_inner);
                    runs.retain(|id, w| !check(&times, &worker, id, w));
                }
            })
            .map_err(|e| tracing::warn!("[worker] cannot start the lease watchdog: {e}"))
            .ok();
        Watchdog { runs, stop, thread }
    }

    /// Looks after `id`, held through `store`, run by `task`.
    pub fn watch(&self, id: RunId, store: Arc<FencedStore>, task: AbortHandle) {
        let watched = Watched {
            store,
            task,
            noted: false,
        };
        self.lock().insert(id, watched);
    }

    /// `id` is no longer held.
    pub fn forget(&self, id: &RunId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Watched>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Acts on one run when its time came; `true` when it is no longer watched.
fn check(times: &LeaseTimes, worker: &str, id: &RunId, w: &mut Watched) -> bool {
    let clock = w.store.lease();
    let since = clock.since_renewal();
    let secs = since.as_secs_f64();
    match clock.phase() {
        Phase::Gone => true,
        Phase::Held if since >= times.term_after() => {
            let agent = w.store.agent();
            match agent {
                // Exited: its result is all that is left, and its write is
                // fenced by the database.
                Some(a) if a.pid > 1 && !os::group_has_live_members(a.pid) => {
                    if !w.noted {
                        w.noted = true;
                        tracing::warn!(
                            "[worker {worker}] run {id}: lease not renewed for {secs:.1}s; its agent \
                             already exited, so its result is still being saved"
                        );
                    }
                    return false;
                }
                Some(a) if a.pid > 1 => {
                    clock.set(Phase::Stopping);
                    os::signal_group(a.pid, Signal::SIGTERM);
                }
                // A native loop (pid 0) or no agent yet: nothing to wait for.
                _ => {
                    clock.set(Phase::Stopping);
                    dispatch_runtime::native::cancel(id);
                    w.task.abort();
                }
            }
            tracing::warn!(
                "[worker {worker}] run {id}: lease not renewed for {secs:.1}s (the database is out \
                 of reach); stopping its agent before the lease can expire for another worker"
            );
            false
        }
        Phase::Stopping if since >= times.kill_after() => {
            if let Some(a) = w.store.agent() {
                os::signal_group(a.pid, Signal::SIGKILL);
            }
            dispatch_runtime::native::cancel(id);
            w.task.abort();
            clock.set(Phase::Gone);
            tracing::warn!(
                "[worker {worker}] run {id}: agent killed {secs:.1}s after the last lease renewal; \
                 the run is another worker's once its lease expires"
            );
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_dead_well_before_the_lease_expires() {
        let t = LeaseTimes::new(Duration::from_secs(30));
        assert_eq!(t.renew_every(), Duration::from_secs(5));
        assert_eq!(t.retry_every(), Duration::from_secs(1));
        assert_eq!(t.term_after(), Duration::from_secs(20));
        assert_eq!(t.kill_after(), Duration::from_secs(25));
        assert!(t.renew_every() < t.term_after());
        assert!(t.term_after() < t.kill_after() && t.kill_after() < t.lease);
    }

    #[test]
    fn a_renewal_after_fencing_began_does_not_bring_the_run_back() {
        let start = Instant::now();
        let clock = LeaseClock::new(start);
        clock.renewed(start + Duration::from_millis(5));
        assert!(clock.writable());
        clock.set(Phase::Stopping);
        clock.renewed(start + Duration::from_secs(1));
        assert_eq!(clock.phase(), Phase::Stopping);
        assert!(!clock.writable());
        clock.lose();
        assert_eq!(clock.phase(), Phase::Gone);
    }

    #[test]
    fn a_lease_is_counted_on_only_until_the_kill_deadline_after_its_renewal() {
        let times = LeaseTimes::new(Duration::from_millis(600));
        let long_ago = Instant::now() - Duration::from_millis(550);
        let clock = LeaseClock::of(long_ago, times);
        // Held as far as writes go (an exited agent's result is still being
        // saved), but past 5/6 of the lease: another worker may hold it soon.
        assert!(clock.writable());
        assert!(!clock.current());
        clock.renewed(Instant::now());
        assert!(clock.current());
        clock.lose();
        assert!(!clock.current());
        assert!(
            LeaseClock::new(long_ago).current(),
            "no deadline unless set"
        );
    }
}
