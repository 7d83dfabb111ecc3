//! Storage for Dispatch: narrow traits per table, the records they hold, one
//! error type, a conformance suite every backend must pass, and the SQLite
//! and PostgreSQL backends.
//!
//! Every state change is a compare-and-set on the run's `version` and appends
//! its event in the same transaction.

mod attempt_end;
mod batch;
mod blobs;
mod callbacks;
mod catalog;
pub mod conformance;
mod created_claimed;
mod error;
mod evals;
mod fenced;
mod limits;
mod messages;
mod model;
mod noop;
pub mod notifications;
mod parcels;
pub mod postgres;
mod queue;
mod queue_timeout;
mod quotas;
mod reliability;
mod retention;
mod service;
mod sessions;
pub mod sqlite;
mod tokens;
mod traces;
mod usage;
mod workers;

use async_trait::async_trait;
use dispatch_core::{NewEvent, RunId};

pub use batch::{BatchItem, BatchStore};
pub use blobs::{BlobExpect, BlobMeta, BlobPart, BlobStore, MAX_BLOB, MAX_PART, prefix_end};
pub use callbacks::{CallbackStore, DueCallback};
pub use catalog::{ParcelCatalog, ParcelEntry, ParcelRemoval};
pub use error::{StoreError, StoreResult};
pub use evals::{EvalRecord, EvalStore};
pub use fenced::FencedArtifactStore;
pub use limits::{BucketLimits, LimitStore, RateGrant};
pub use messages::{Message, MessageStore, NewMessage};
pub use model::{Artifact, Attempt, Event, NewRun, Run, RunFilter, StateWrite};
pub use noop::NoopStore;
pub use notifications::{
    NewNotification, Notification, NotificationCounts, NotificationStore, Settle,
};
pub use parcels::{HeldLog, LogArchive, ParcelStore, RunLogStore, StoredParcel};
pub use postgres::PgStore;
pub use queue::{
    Capacity, ClaimRequest, Claimed, HeldEvents, HeldWrites, Lease, QueueOptions, QueueStore,
    QueueTimes,
};
pub use quotas::{QuotaStore, QuotaUse};
pub use reliability::{
    Approval, Created, DeadLetter, Decision, ENDED_DECISION, REVIEW_APPROVAL, REVIEW_DEADLINE_BY,
    ReliabilityStore, Review, RunExtras,
};
pub use retention::{Expired, RetentionCursor, RetentionStore};
pub use service::{QueuedWake, ServiceState, ServiceStore};
pub use sessions::{
    FILE_PREFIX, MAX_SESSION_KEY, SCOPED_PREFIXES, SessionContents, SessionRecord, SessionStore,
    SessionSummary, session_contents, session_name_of, summaries as session_summaries,
};
pub use sqlite::SqliteStore;
pub use tokens::{ProjectRole, TokenRecord, TokenScope, TokenStore};
pub use traces::{RunTrace, TRACE_EVENT_KINDS, TraceStore};
pub use usage::{
    NO_LABEL, UNKNOWN_MODEL, UsageBy, UsageQuery, UsageReport, UsageRow, UsageStore,
    report as usage_report,
};
pub use workers::{WorkerBeat, WorkerInfo, WorkerStore};

/// Runs: create, read, compare-and-set state changes, delete.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Inserts a new run in `queued` with its `created` event.
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run>;

    async fn get_run(&self, id: &RunId) -> StoreResult<Run>;

    /// The one run whose id starts with `prefix` (already normalized to
    /// lowercase hex). `NotFound` when none, `Ambiguous` when several.
    async fn resolve_prefix(&self, prefix: &str) -> StoreResult<RunId>;

    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;

    /// Moves the run from the state saved at `expected_version` to
    /// `write.state`, appends `write.event`, stores `write.output` when given,
    /// and maintains the attempts table (an attempt opens when the run enters
    /// `running`, closes when it leaves `running`/`paused`).
    /// `Conflict` when the version moved on; the caller reloads and decides again.
    async fn transition(
        &self,
        id: &RunId,
        expected_version: i64,
        write: &StateWrite,
    ) -> StoreResult<Run> {
        self.transitions(id, expected_version, std::slice::from_ref(write))
            .await
    }

    /// Several state changes in a row, saved at once: each of `writes` moves
    /// the run on from the state the one before it left (the first from the
    /// state saved at `expected_version`), with its event, its output and its
    /// effect on the attempts table, as that many [`transition`](Self::transition)s
    /// would; but in one transaction, so all are saved or none is. The version
    /// moves on by `writes.len()`. (An agent that exited before its start was
    /// saved: `running`, then its end, with one commit.)
    async fn transitions(
        &self,
        id: &RunId,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run>;

    /// Marks that someone asked the run to stop (and appends a `stop_requested`
    /// event). Idempotent: the first request's time is kept.
    async fn request_stop(&self, id: &RunId, at: dispatch_core::Ts) -> StoreResult<Run>;

    /// Deletes a terminal run with its events, attempts and artifact records.
    /// `InvalidState` when the run is not terminal.
    async fn delete_run(&self, id: &RunId) -> StoreResult<()>;

    /// While `on`, this process writes on a latency path (a workflow's
    /// coordinator between its members' turns): a store that checkpoints a
    /// log on commit (SQLite's WAL) leaves that to the other writers. Off:
    /// as before. Nothing for a store without such a log.
    fn latency_path(&self, _on: bool) {}
}

/// The append-only event log, and the usage totals it feeds.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to the run's log in one transaction. Usage events add to
    /// the run's token and cost totals in the same transaction.
    async fn append_events(&self, run: &RunId, events: &[NewEvent]) -> StoreResult<()>;

    /// Events with `seq > after`, oldest first, at most `limit`.
    async fn list_events(&self, run: &RunId, after: i64, limit: usize) -> StoreResult<Vec<Event>>;

    /// The run's newest event of one of `kinds`, if any (what a run waits
    /// for now, say, without reading its whole log).
    async fn latest_event(&self, run: &RunId, kinds: &[&str]) -> StoreResult<Option<Event>>;
}

/// Artifacts collected from runs.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    async fn add_artifacts(&self, run: &RunId, artifacts: &[Artifact]) -> StoreResult<()>;
    async fn list_artifacts(&self, run: &RunId) -> StoreResult<Vec<Artifact>>;
    /// Whether any run records an artifact of digest `sha256` (a prune
    /// deletes the stored objects of those none does).
    async fn artifact_in_use(&self, sha256: &str) -> StoreResult<bool>;
}

/// Attempts of a run (read side; written by [`RunStore::transition`]).
#[async_trait]
pub trait AttemptStore: Send + Sync {
    async fn list_attempts(&self, run: &RunId) -> StoreResult<Vec<Attempt>>;
}

/// Everything a backend provides.
pub trait Store:
    RunStore
    + EventStore
    + ArtifactStore
    + AttemptStore
    + ReliabilityStore
    + SessionStore
    + MessageStore
    + LimitStore
    + QuotaStore
{
}
impl<
    T: RunStore
        + EventStore
        + ArtifactStore
        + AttemptStore
        + ReliabilityStore
        + SessionStore
        + MessageStore
        + LimitStore
        + QuotaStore,
> Store for T
{
}
