//! Retention: deleting what finished runs left behind, a bounded batch per
//! transaction, so that a pass over a million old runs never holds the
//! queue's tables for long.
//!
//! A run is "finished before `t`" when it is in a terminal status and its
//! last state change (`updated_at`, its end) is older than `t`. Whatever the
//! rule, a retention pass keeps the runs someone still has to act on: a dead
//! letter not replayed yet, an approval not decided yet, a completion
//! callback not delivered yet.

use async_trait::async_trait;
use dispatch_core::{RunId, Status, Ts};

use crate::StoreResult;

/// Where a pass over one status stopped: the end time and id of the last
/// run it deleted. The next batch starts after it, so runs a batch kept are
/// not read again by every later batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionCursor {
    pub updated_at: Ts,
    pub id: String,
}

/// What one batch deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// The runs deleted, oldest first.
    pub runs: Vec<RunId>,
    /// Artifact digests the deleted runs recorded that no remaining run
    /// records: their files may go.
    pub artifacts: Vec<String>,
    /// Log archive digests the deleted runs had that no remaining run has:
    /// their objects (`logs/<sha256>`) may go.
    pub logs: Vec<String>,
    /// Brief digests only the deleted runs had: deleted from the store in
    /// the same transaction; their files (if any) may go.
    pub briefs: Vec<String>,
    /// Where the next batch starts (`None` when nothing was deleted).
    pub cursor: Option<RetentionCursor>,
}

/// Retention's deletes (an opt-in capability of a store).
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes at most `limit` runs in `status` (terminal) that finished
    /// before `before`, after `after` in (end time, id) order, with
    /// everything stored of them (events, attempts, artifact records,
    /// approvals, replayed dead letters, shipped logs, delivered callbacks,
    /// service state) and the briefs no other run has, in one transaction.
    /// Runs a retention pass keeps (see the module) are skipped. A `status`
    /// that is not terminal deletes nothing.
    async fn expire_runs(
        &self,
        status: Status,
        before: Ts,
        after: Option<&RetentionCursor>,
        limit: usize,
    ) -> StoreResult<Expired>;

    /// Deletes the events of at most `limit` runs that finished (in any
    /// terminal status) before `before`, after `after`, keeping the runs
    /// themselves, their attempts and their output; skips the runs a pass
    /// keeps. Returns how many runs lost their events and where the next
    /// batch starts (`None`: none left to do).
    async fn expire_events(
        &self,
        before: Ts,
        after: Option<&RetentionCursor>,
        limit: usize,
    ) -> StoreResult<(usize, Option<RetentionCursor>)>;
}
