//! When an idle worker claims without being woken: after a claim that
//! filled its slots, when a queued run's backoff ends, when a lease is due
//! to expire (a sweep), and at a safety-net poll.

use std::time::Duration;

use dispatch_core::{Ts, now_ms};
use dispatch_store::QueueTimes;
use tokio::time::Instant;

/// When an idle worker acts without being woken.
pub(crate) struct Timers {
    /// Claim at the next turn of the loop.
    pub(crate) claim_due: bool,
    /// The last claim filled every slot or its batch: there may be more.
    pub(crate) saturated: bool,
    /// A queued run's backoff ends then.
    pub(crate) ready_at: Option<Instant>,
    /// Claim again then: a run was ready and not taken (see [`Timers::ready_left`]).
    pub(crate) recheck_at: Option<Instant>,
    /// The wait before the next such look, doubling while runs stay left.
    recheck: Duration,
    /// Sweep expired leases then (a lease expires).
    pub(crate) sweep_at: Option<Instant>,
    /// The safety-net claim.
    pub(crate) poll_at: Instant,
    /// The next try to connect notifications, when they are not.
    pub(crate) reconnect_at: Instant,
    /// The safety net's interval while notifications are not connected.
    pub(crate) poll: Duration,
    /// When the last claim looked at the queue: what was not ready then
    /// is still to come, or due.
    pub(crate) claimed_at: Ts,
}

/// The safety net's interval while notifications are connected: they are
/// reliable, so this only bounds the damage of a silently dead connection.
pub(crate) const CONNECTED_POLL: Duration = Duration::from_secs(300);
/// The first wait before claiming again for a ready run a claim left.
pub(crate) const MIN_RECHECK: Duration = Duration::from_millis(50);
/// The longest: a run no worker here can take costs a claim this often.
pub(crate) const MAX_RECHECK: Duration = Duration::from_secs(5);
/// The shortest wait before a sweep, so clock skew cannot make it spin.
pub(crate) const MIN_SWEEP_WAIT: Duration = Duration::from_millis(250);

impl Timers {
    pub(crate) fn new(poll: Duration) -> Self {
        let now = Instant::now();
        Timers {
            claim_due: true,
            saturated: false,
            ready_at: None,
            recheck_at: None,
            recheck: MIN_RECHECK,
            // Runs orphaned while no worker was up are swept at once.
            sweep_at: Some(now),
            poll_at: now + poll,
            reconnect_at: now + poll,
            poll,
            claimed_at: now_ms(),
        }
    }

    pub(crate) fn reconnect_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.reconnect_at {
            return false;
        }
        self.reconnect_at = now + self.poll;
        true
    }

    pub(crate) fn claimed(&mut self, full: bool, connected: bool, at: Ts) {
        self.claimed_at = at;
        self.claim_due = full;
        self.saturated = full;
        let poll = if connected { CONNECTED_POLL } else { self.poll };
        self.poll_at = Instant::now() + poll;
    }

    /// A run ended: if claims were left behind for want of a slot, claim.
    pub(crate) fn slot_freed(&mut self) {
        if self.saturated {
            self.claim_due = true;
        }
    }

    pub(crate) fn schedule(&mut self, times: QueueTimes) {
        let now = now_ms();
        let at =
            |ts: i64| Instant::now() + Duration::from_millis(u64::try_from(ts - now).unwrap_or(0));
        self.ready_at = times.next_ready_at.map(at);
        if let Some(expiry) = times.next_lease_expiry {
            let at = at(expiry).max(Instant::now() + MIN_SWEEP_WAIT);
            self.sweep_at = Some(self.sweep_at.map_or(at, |s| s.min(at)));
        }
    }

    /// A run that was ready when this worker claimed is still queued: claim
    /// again after a wait that doubles while that lasts.
    pub(crate) fn ready_left(&mut self) {
        self.recheck_at = Some(Instant::now() + self.recheck);
        self.recheck = (self.recheck * 2).min(MAX_RECHECK);
    }

    /// No ready run is left behind.
    pub(crate) fn none_left(&mut self) {
        self.recheck_at = None;
        self.recheck = MIN_RECHECK;
    }

    /// Wait for a wake-up at most until a backoff ends, a run left behind
    /// is looked at again, or the safety net.
    pub(crate) fn wake_deadline(&self) -> Instant {
        [self.ready_at, self.recheck_at]
            .into_iter()
            .flatten()
            .fold(self.poll_at, Instant::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_left_ready_is_looked_at_again_sooner_than_the_safety_net_backing_off() {
        let mut t = Timers::new(Duration::from_secs(3600));
        assert_eq!(t.wake_deadline(), t.poll_at, "nothing else to wait for");
        let mut waits = Vec::new();
        for _ in 0..9 {
            let before = Instant::now();
            t.ready_left();
            waits.push(t.wake_deadline() - before);
        }
        assert!(
            waits[0] >= MIN_RECHECK && waits[0] < MIN_RECHECK * 2,
            "{waits:?}"
        );
        // Never shorter than the wait before (give or take the moments
        // between reading the clock here and in `ready_left`).
        let slack = Duration::from_millis(5);
        assert!(waits.windows(2).all(|w| w[1] + slack >= w[0]), "{waits:?}");
        assert!(
            waits[8] >= MAX_RECHECK && waits[8] < MAX_RECHECK * 2,
            "{waits:?}"
        );
        t.none_left();
        assert_eq!(t.wake_deadline(), t.poll_at);
        t.ready_left();
        assert!(
            t.wake_deadline() < Instant::now() + MIN_RECHECK * 2,
            "back to the first wait"
        );
    }
}
