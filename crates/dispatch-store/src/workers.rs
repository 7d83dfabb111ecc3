//! The workers of a cluster: each running worker says every few seconds
//! who it is (name, labels, slots, lease length); the list joins that with
//! the leases the worker holds, for the dashboard's workers page.
//!
//! Opt-in, like [`crate::QueueStore`]; both backends provide it.

use async_trait::async_trait;
use dispatch_core::Ts;

use crate::StoreResult;

/// What a worker says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerBeat {
    /// Unique in the cluster: the lease owner.
    pub name: String,
    pub labels: Vec<String>,
    pub slots: u32,
    /// How long its leases last (a renewal's age is its expiry less this).
    pub lease_ms: i64,
    /// When this worker process started.
    pub started_at: Ts,
    /// Now.
    pub seen_at: Ts,
    /// Set once, when it stopped (drained); `None` while it works.
    pub stopped_at: Option<Ts>,
    /// The machine it runs on (its hostname) and its process id: who holds
    /// the name.
    pub host: String,
    pub pid: u32,
}

/// A worker as listed: what it last said, and the runs it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub beat: WorkerBeat,
    /// Live runs (starting, running, paused) leased to it.
    pub held: u32,
    /// When it last renewed a lease it still holds (the newest expiry
    /// less its lease length); `None` without leases.
    pub renewed_at: Option<Ts>,
}

#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Inserts or replaces the row of `beat.name` when the name is free or
    /// this process's already (same host and pid), or its holder stopped,
    /// went silent before `stale_before`, or is `dead` (a pid on this host
    /// that no longer runs); returns whether it did (compare-and-set: two
    /// live workers never both hold a name). Forgets workers not seen for
    /// [`FORGET_AFTER_MS`] before `beat.seen_at`.
    async fn worker_beat(
        &self,
        beat: &WorkerBeat,
        stale_before: Ts,
        dead: Option<u32>,
    ) -> StoreResult<bool>;

    /// Every worker that said something since `since`, by name.
    async fn list_workers(&self, since: Ts) -> StoreResult<Vec<WorkerInfo>>;
}

/// How long a worker that said nothing more is remembered: a week.
pub const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

/// Forgets the workers not seen since the bind.
pub(crate) const FORGET: &str = "DELETE FROM workers WHERE seen_at < SINCE";

/// The labels column: a JSON array.
pub(crate) fn labels_json(labels: &[String]) -> String {
    serde_json::to_string(labels).expect("labels are strings")
}

pub(crate) fn labels_of(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// When a worker with these leases last renewed.
pub(crate) fn renewed(newest_expiry: Option<Ts>, lease_ms: i64) -> Option<Ts> {
    newest_expiry.map(|e| e - lease_ms)
}

/// The query both backends run (`?`/`$n` placeholders differ: one bind, `since`).
pub(crate) const LIST: &str = "SELECT w.name, w.labels, w.slots, w.lease_ms, w.started_at, w.seen_at, w.stopped_at, w.host, w.pid,
        (SELECT COUNT(*) FROM runs r WHERE r.lease_owner = w.name AND r.status IN ('starting', 'running', 'paused')),
        (SELECT MAX(r.lease_expires_at) FROM runs r WHERE r.lease_owner = w.name AND r.status IN ('starting', 'running', 'paused'))
     FROM workers w WHERE w.seen_at >= SINCE ORDER BY w.name";

pub(crate) const UPSERT: &str =
    "INSERT INTO workers (name, labels, slots, lease_ms, started_at, seen_at, stopped_at, host, pid)
     VALUES (P1, P2, P3, P4, P5, P6, P7, P8, P9)
     ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, slots = excluded.slots,
         lease_ms = excluded.lease_ms, started_at = excluded.started_at,
         seen_at = excluded.seen_at, stopped_at = excluded.stopped_at,
         host = excluded.host, pid = excluded.pid
     WHERE (workers.host = excluded.host AND (workers.pid = excluded.pid OR workers.pid = P11))
         OR workers.stopped_at IS NOT NULL OR workers.seen_at < P10";
