//! Admission control: a worker takes only what its runtime keeps up with.
//!
//! `--slots` bounds the runs in hand, but a slot count far above what the
//! machine serves (the measured case: 10,000 slots on 2 cores) made a
//! worker claim everything at once and then run all of it too slowly:
//! model calls timed out, mounts queued in the kernel, and the queue's other
//! workers found nothing to take. So between claims the worker looks at
//! how far behind its async runtime is, and takes more only while it keeps
//! up:
//!
//! - **The measure** is the runtime's lag: while the worker holds runs, a
//!   task on its runtime wakes every [`TICK`] and records how much later
//!   than asked it woke (timers fire late exactly when the runtime's thread
//!   is busy with other tasks); the lag is the largest of the last
//!   [`WINDOW`] such samples.
//! - **One batch per look**: after a claim, the next waits for a sample
//!   taken after it, so the runs just started are in the measure before
//!   more are taken.
//! - **Hold back** while the lag is at least `max_lag` (`--max-lag-ms`,
//!   default [`DEFAULT_MAX_LAG`]); take again once it is below half of it.
//!   A worker with nothing in hand always claims (its runtime's lag is then
//!   none of its runs' doing). Runs left in the queue are other workers'.
//!
//! Each change is a log line; the lag and the times claims were held back
//! are metrics (`dispatch_worker_runtime_lag_ms`,
//! `dispatch_worker_claims_held_back_total`). `max_lag` zero turns it off.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How often the lag is sampled while the worker holds runs.
pub const TICK: Duration = Duration::from_millis(50);

/// How many recent samples the lag is the largest of.
pub const WINDOW: usize = 4;

/// The default `max_lag`: a runtime this far behind delays every run's
/// model stream, tool output and write by as much; far above a runtime
/// that keeps up (a millisecond or two), well under a lease's renewal
/// period.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_millis(250);

/// What the sampling task found.
#[derive(Debug, Default)]
struct Samples {
    /// The last [`WINDOW`] lags, newest last.
    recent: VecDeque<Duration>,
    /// Samples taken so far.
    taken: u64,
    /// Sample while runs are held (set by the worker loop).
    active: bool,
}

impl Samples {
    fn lag(&self) -> Duration {
        self.recent.iter().copied().max().unwrap_or_default()
    }
}

/// Whether the worker may claim now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Claim.
    Open,
    /// Wait for the next sample ([`Admission::changed`]).
    Wait,
}

/// A change of the worker's admission, for its log and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    HeldBack { lag: Duration },
    Resumed { lag: Duration },
}

/// The worker loop's admission control.
pub(super) struct Admission {
    max_lag: Duration,
    samples: Arc<Mutex<Samples>>,
    /// Told of every sample.
    sampled: Arc<Notify>,
    /// Told when sampling should start.
    activate: Arc<Notify>,
    /// Claims are held back (the lag reached `max_lag`).
    held_back: bool,
    /// The next claim waits until more samples than this were taken.
    needs: u64,
    metrics: Arc<Metrics>,
    /// The sampling task (started with the first runs held).
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Admission {
    pub(super) fn new(max_lag: Duration, metrics: Arc<Metrics>) -> Admission {
        Admission {
            max_lag,
            samples: Arc::default(),
            sampled: Arc::new(Notify::new()),
            activate: Arc::new(Notify::new()),
            held_back: false,
            needs: 0,
            metrics,
            task: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Samples while `held` runs are in hand (none: the task sleeps).
    fn sample_while(&mut self, held: usize) {
        let active = held > 0;
        let mut s = self.lock();
        if s.active == active {
            return;
        }
        s.active = active;
        if !active {
            // An idle worker's old lag says nothing of its next runs.
            s.recent.clear();
        }
        drop(s);
        if active {
            if self.task.is_none() {
                self.task = Some(tokio::spawn(sample(
                    self.samples.clone(),
                    self.sampled.clone(),
                    self.activate.clone(),
                    self.metrics.clone(),
                )));
            }
            self.activate.notify_one();
        }
    }

    /// The worker holds `held` runs now: the lag is sampled only while it
    /// holds some.
    pub(super) fn holding(&mut self, held: usize) {
        if !self.max_lag.is_zero() {
            self.sample_while(held);
        }
    }

    /// A claim was made: the next one waits for a sample taken after it.
    pub(super) fn claimed(&mut self) {
        let taken = self.lock().taken;
        self.needs = taken;
    }

    /// Whether to claim, with `held` runs in hand. `changes` is told of a
    /// change between holding back and claiming.
    pub(super) fn verdict(&mut self, held: usize, changes: impl FnOnce(Change)) -> Verdict {
        if self.max_lag.is_zero() {
            return Verdict::Open;
        }
        self.sample_while(held);
        let (taken, lag) = {
            let s = self.lock();
            (s.taken, s.lag())
        };
        if held == 0 {
            if self.held_back {
                self.held_back = false;
                changes(Change::Resumed { lag });
            }
            return Verdict::Open;
        }
        if taken <= self.needs {
            return Verdict::Wait;
        }
        match self.held_back {
            false if lag >= self.max_lag => {
                self.held_back = true;
                changes(Change::HeldBack { lag });
            }
            true if lag < self.max_lag / 2 => {
                self.held_back = false;
                changes(Change::Resumed { lag });
            }
            _ => {}
        }
        if self.held_back {
            // Look again at the next sample.
            self.needs = taken;
            return Verdict::Wait;
        }
        Verdict::Open
    }

    /// Completes when a sample is taken.
    pub(super) async fn changed(&self) {
        self.sampled.notified().await;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The sampling task: while active, sleeps [`TICK`] and records how late
/// it woke.
async fn sample(
    samples: Arc<Mutex<Samples>>,
    sampled: Arc<Notify>,
    activate: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    let lock = || samples.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if !lock().active {
            activate.notified().await;
            continue;
        }
        let due = Instant::now() + TICK;
        tokio::time::sleep_until(due).await;
        let lag = Instant::now().saturating_duration_since(due);
        {
            let mut s = lock();
            if s.recent.len() == WINDOW {
                s.recent.pop_front();
            }
            s.recent.push_back(lag);
            s.taken += 1;
        }
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        metrics.runtime_lag_ms.store(ms, Ordering::Relaxed);
        sampled.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks until the verdict is not "wait for a sample" or something changed.
    async fn settle(a: &mut Admission, held: usize) -> (Verdict, Vec<Change>) {
        loop {
            let mut changes = Vec::new();
            match a.verdict(held, |c| changes.push(c)) {
                Verdict::Wait if changes.is_empty() => a.changed().await,
                v => return (v, changes),
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_that_keeps_up_admits_one_batch_per_sample() {
        let mut a = Admission::new(Duration::from_secs(5), Arc::default());
        assert_eq!(a.verdict(0, |_| panic!("no change")), Verdict::Open);
        a.claimed();
        // No sample since the claim yet.
        assert_eq!(a.verdict(3, |_| panic!("no change")), Verdict::Wait);
        let (v, changes) = settle(&mut a, 3).await;
        assert_eq!((v, changes), (Verdict::Open, Vec::new()));
        a.claimed();
        assert_eq!(a.verdict(3, |_| panic!("no change")), Verdict::Wait);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_holds_claims_back_until_it_catches_up() {
        let metrics: Arc<Metrics> = Arc::default();
        let mut a = Admission::new(Duration::from_millis(50), metrics.clone());
        a.claimed();
        assert_eq!(a.verdict(1, |_| panic!("no change")), Verdict::Wait);
        // The sampler is asleep; a run blocks the runtime's only thread
        // past its wake-up.
        tokio::time::sleep(Duration::from_millis(1)).await;
        std::thread::sleep(TICK + Duration::from_millis(100));
        let (v, changes) = settle(&mut a, 1).await;
        assert_eq!(v, Verdict::Wait);
        assert!(
            matches!(changes[..], [Change::HeldBack { lag }] if lag >= Duration::from_millis(50)),
            "{changes:?}"
        );
        assert!(metrics.runtime_lag_ms.load(Ordering::Relaxed) >= 50);
        // Nothing blocks it any more: once the late sample leaves the
        // window, it claims again.
        let (v, changes) = settle(&mut a, 1).await;
        assert_eq!(v, Verdict::Open);
        assert!(
            matches!(changes[..], [Change::Resumed { .. }]),
            "{changes:?}"
        );
        // With nothing in hand it always claims.
        a.claimed();
        assert_eq!(a.verdict(0, |_| panic!("no change")), Verdict::Open);
    }

    #[test]
    fn zero_turns_it_off() {
        let mut a = Admission::new(Duration::ZERO, Arc::default());
        a.claimed();
        assert_eq!(a.verdict(100, |_| panic!("no change")), Verdict::Open);
    }
}
