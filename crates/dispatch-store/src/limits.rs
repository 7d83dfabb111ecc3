//! Concurrency keys and model rate limits, shared by every worker through
//! the store.
//!
//! **Concurrency keys.** A run dispatched with a key ([`RunExtras::concurrency`](crate::RunExtras))
//! is claimed (by a worker, or by its local helper's compare-and-set) only
//! while fewer than its `max` runs of the key are *ahead of it*: live
//! (`starting`, `running`, `paused`) or queued and older. That one condition
//! gives both the limit and the order (FIFO per key), and it is race-free
//! under concurrent claimers: a run moving from queued to live never changes
//! the count another run sees; PostgreSQL claimers also serialize per key
//! with an advisory lock and count again (see `postgres/queue.rs`).
//!
//! **Rate limits.** A sliding-window log per bucket (`model:<name>` or
//! `provider:<name>`): a call is admitted when the requests, and tokens,
//! admitted in the last window leave room for it; the admission is a row
//! (its time and estimated tokens), settled to the real tokens after the
//! call. Strict: never more than the limit in any window of its length
//! (a token bucket would let twice the limit through across a refill). A
//! provider's 429 blocks the bucket until its `retry-after`.

use async_trait::async_trait;
use dispatch_core::EventKind;
use dispatch_core::concurrency::Rate;
use dispatch_core::{NewEvent, RunId, RunState, Status, Transition, Ts};
use serde_json::json;

use crate::{Run, StateWrite, StoreResult};

/// Statuses in which a run holds a slot of its key.
pub(crate) const SLOT_HOLDING: &str = "('starting', 'running', 'paused')";

/// The SQL condition that run `r` (a table alias) may take a slot of its key now.
pub(crate) fn admits(r: &str) -> String {
    format!(
        "({r}.concurrency_key IS NULL OR (SELECT count(*) FROM runs o \
         WHERE o.concurrency_key = {r}.concurrency_key AND o.id <> {r}.id \
         AND (o.status IN {SLOT_HOLDING} OR (o.status = 'queued' \
         AND (o.created_at < {r}.created_at OR (o.created_at = {r}.created_at AND o.id < {r}.id))))) \
         < {r}.concurrency_max)"
    )
}

/// The write that cancels a queued run because of its key.
pub(crate) fn cancel_write(run: &Run, reason: &str, at: Ts) -> Option<StateWrite> {
    let t = Transition::Cancel {
        reason: reason.to_string(),
        exit_code: None,
        at,
    };
    let state: RunState = run.state.apply(run.operation, &t).ok()?;
    let data = json!({"from": run.status(), "to": Status::Cancelled, "reason": reason});
    Some(StateWrite::new(
        state,
        NewEvent::new(EventKind::State, run.attempt, at, data),
    ))
}

/// The reason a run dropped by `STRATEGY drop` is cancelled with.
pub(crate) fn dropped_reason(key: &str, max: u32, ahead: i64) -> String {
    format!(
        "dropped: concurrency key `{key}` already has {ahead} live or queued run(s) (MAX {max}, STRATEGY drop)"
    )
}

/// The reason a run displaced by `STRATEGY cancel-in-progress` is cancelled with.
pub(crate) fn displaced_reason(key: &str, by: &RunId) -> String {
    format!(
        "cancelled by run {by}: concurrency key `{key}` (STRATEGY cancel-in-progress) makes room for the newest run"
    )
}

/// What [`LimitStore::rate_acquire`] answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateGrant {
    /// Admitted: the grant to settle with the call's real tokens.
    Granted { grant: i64 },
    /// Full (or blocked by a 429) until then; ask again at that time.
    WaitUntil(Ts),
}

/// Limits of one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketLimits {
    pub requests: Option<Rate>,
    pub tokens: Option<Rate>,
}

impl BucketLimits {
    /// The longest window: older grants no longer count.
    pub fn horizon_ms(&self) -> i64 {
        let r = self.requests.map_or(0, |r| r.window_ms);
        let t = self.tokens.map_or(0, |t| t.window_ms);
        i64::try_from(r.max(t)).unwrap_or(i64::MAX)
    }

    /// Whether a call of `est` tokens may go at `now`, given the grants
    /// (time, tokens) of the last [`horizon_ms`](Self::horizon_ms), oldest
    /// first: `Ok`, or the time at which it may. A call larger than the
    /// token limit goes when the window holds no tokens at all.
    pub fn decide(&self, grants: &[(Ts, u64)], est: u64, now: Ts) -> Result<(), Ts> {
        let mut wait = now;
        if let Some(r) = self.requests {
            let w = i64::try_from(r.window_ms).unwrap_or(i64::MAX);
            let inside: Vec<Ts> = grants
                .iter()
                .map(|g| g.0)
                .filter(|at| *at > now - w)
                .collect();
            let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
            if inside.len() >= limit {
                // The oldest that must leave the window for one more to fit.
                wait = wait.max(inside[inside.len() - limit] + w);
            }
        }
        if let Some(t) = self.tokens {
            let w = i64::try_from(t.window_ms).unwrap_or(i64::MAX);
            let inside: Vec<&(Ts, u64)> = grants.iter().filter(|g| g.0 > now - w).collect();
            let want = est.min(t.limit);
            let mut used: u64 = inside.iter().map(|g| g.1).sum();
            for g in &inside {
                if used + want <= t.limit {
                    break;
                }
                used = used.saturating_sub(g.1);
                wait = wait.max(g.0 + w);
            }
        }
        if wait > now { Err(wait) } else { Ok(()) }
    }
}

/// Concurrency keys and rate limits, as a worker or a helper needs them.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Runs of concurrency key `key` that still hold a slot and were asked
    /// to stop (displaced by `STRATEGY cancel-in-progress`): the local
    /// runtime signals their helpers.
    async fn concurrency_stopping(&self, key: &str) -> StoreResult<Vec<RunId>>;

    /// How many runs of concurrency key `key` hold a slot now (starting,
    /// running or paused): what a queued run of the key waits behind.
    async fn concurrency_holding(&self, key: &str) -> StoreResult<u32>;

    /// Admits one call of about `est_tokens` to `bucket` at `now` when its
    /// limits allow (recording the grant), or says until when to wait.
    /// Atomic across every process sharing the store.
    async fn rate_acquire(
        &self,
        bucket: &str,
        limits: &BucketLimits,
        est_tokens: u64,
        now: Ts,
    ) -> StoreResult<RateGrant>;

    /// Replaces a grant's estimated tokens with what the call really used.
    async fn rate_settle(&self, grant: i64, tokens: u64) -> StoreResult<()>;

    /// A provider answered 429: nothing more is admitted to `bucket` before `until`.
    async fn rate_block(&self, bucket: &str, until: Ts) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: Option<(u64, u64)>, tokens: Option<(u64, u64)>) -> BucketLimits {
        let rate = |(limit, window_ms)| Rate { limit, window_ms };
        BucketLimits {
            requests: requests.map(rate),
            tokens: tokens.map(rate),
        }
    }

    #[test]
    fn requests_wait_for_the_oldest_to_leave_the_window() {
        let l = limits(Some((3, 1000)), None);
        assert_eq!(l.decide(&[(100, 1), (200, 1)], 1, 500), Ok(()));
        assert_eq!(l.decide(&[(100, 1), (200, 1), (300, 1)], 1, 500), Err(1100));
        // Grants out of the window do not count.
        assert_eq!(l.decide(&[(100, 1), (200, 1), (300, 1)], 1, 1101), Ok(()));
    }

    #[test]
    fn tokens_wait_until_enough_leave_the_window() {
        let l = limits(None, Some((100, 1000)));
        assert_eq!(l.decide(&[(0, 50), (10, 40)], 10, 20), Ok(()));
        assert_eq!(l.decide(&[(0, 50), (10, 40)], 30, 20), Err(1000));
        assert_eq!(l.decide(&[(0, 50), (10, 40)], 80, 20), Err(1010));
        // Larger than the limit: goes when the window is empty.
        assert_eq!(l.decide(&[(0, 50)], 500, 20), Err(1000));
        assert_eq!(l.decide(&[], 500, 20), Ok(()));
    }
}
