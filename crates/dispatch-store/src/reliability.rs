//! Reliability capabilities: deduplicated creation, sessions, the effective
//! per-run policy, approvals and the dead-letter queue.
//!
//! Every backend implements [`ReliabilityStore`]; the conformance suite pins
//! what it promises (`conformance/reliability.rs`).

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{NewRun, Run, StoreResult};

/// What a dispatch stores with a run beyond [`NewRun`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunExtras {
    /// Runs with the same key are deduplicated (see [`ReliabilityStore::create_run_with`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The bound session (`<parcel>/<name>`); at most one live run holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The effective reliability policy (retry, timeouts, limits), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// Keep the run's workspace (`runs/<id>/work/`) after it ends, until
    /// the run is removed (`--keep-workspace`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_workspace: bool,
    /// The run's concurrency key, its MAX and STRATEGY (see [`crate::LimitStore`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<dispatch_core::concurrency::RunConcurrency>,
    /// The W3C `traceparent` the run was created under (its trace joins
    /// the caller's), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Events appended with the run's creation, in the same transaction
    /// (a policy's decision): none when the run already existed.
    #[serde(skip)]
    pub events: Vec<dispatch_core::event::NewEvent>,
    /// Why a person must look at the run before it starts (a policy's
    /// `review` rule): the run is created in `review`, never claimed, with
    /// its [`REVIEW_APPROVAL`] pending, in the same transaction. It takes
    /// no slot of its concurrency key and is not claimed at creation.
    #[serde(skip)]
    pub review: Option<Review>,
}

/// Why a run waits in review, and how long it may wait.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Review {
    /// The `review` rule's reasons.
    pub reason: String,
    /// How long after its creation the review is decided by nobody: the
    /// [`REVIEW_APPROVAL`]'s deadline, after which the run is cancelled
    /// (`dispatch server --review-timeout`, `DISPATCH_REVIEW_TIMEOUT`).
    /// `None`: it waits until someone decides.
    pub timeout_ms: Option<i64>,
}

impl From<&str> for Review {
    fn from(reason: &str) -> Self {
        Review {
            reason: reason.to_string(),
            timeout_ms: None,
        }
    }
}

impl From<String> for Review {
    fn from(reason: String) -> Self {
        Review {
            reason,
            timeout_ms: None,
        }
    }
}

/// The approval a run in review waits for: deciding it approves the run
/// into the queue or denies it (see [`ReliabilityStore::decide_approval_moving`]).
pub const REVIEW_APPROVAL: &str = "policy-review";

/// Who decides a review nobody decided by its deadline (the run is
/// cancelled; see `dispatch_runtime::review`).
pub const REVIEW_DEADLINE_BY: &str = "dispatch (review deadline)";

/// The notification written with a decision that moved `run`: a review
/// denied by its deadline ([`REVIEW_DEADLINE_BY`]) tells the approvers
/// ([`crate::notifications::REVIEW_EXPIRED`]); any other decision, none.
pub(crate) fn moving_notification(
    decided: &Approval,
    run: &Run,
) -> Option<crate::notifications::NewNotification> {
    let expired = decided.id == REVIEW_APPROVAL
        && decided.decided_by.as_deref() == Some(REVIEW_DEADLINE_BY)
        && run.state.is_terminal();
    expired.then(|| {
        crate::notifications::review_expired(
            decided,
            run.state.reason().unwrap_or_default(),
            decided.decided_at.unwrap_or(decided.requested_at),
        )
    })
}

/// The state and the pending approval of `new` created in `review` (the
/// approval's deadline: its timeout after the run's creation).
pub(crate) fn review_of(new: &NewRun, review: &Review) -> (dispatch_core::RunState, Approval) {
    let reason = &review.reason;
    let state = dispatch_core::RunState::Review {
        reason: reason.to_string(),
        since: new.created_at,
    };
    let approval = Approval {
        run_id: new.id.clone(),
        id: REVIEW_APPROVAL.to_string(),
        attempt: 1,
        summary: format!("start this run? {reason}"),
        requested_at: new.created_at,
        deadline: review.timeout_ms.map(|t| new.created_at.saturating_add(t)),
        decision: None,
        decided_by: None,
        rationale: None,
        decided_at: None,
        details: Some(serde_json::json!({"kind": "review", "reason": reason})),
        input: None,
    };
    (state, approval)
}

/// What [`ReliabilityStore::create_run_with`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// A new run was inserted.
    New(Run),
    /// A run with the same idempotency key is active or succeeded; nothing was inserted.
    Existing(Run),
}

impl Created {
    pub fn run(&self) -> &Run {
        match self {
            Created::New(r) | Created::Existing(r) => r,
        }
    }
}

/// An approval an agent asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub run_id: RunId,
    /// The agent's id for it (unique within the run).
    pub id: String,
    pub attempt: u32,
    pub summary: String,
    pub requested_at: Ts,
    /// When it is denied automatically, if ever.
    pub deadline: Option<Ts>,
    /// `approve` or `deny`, once decided; [`ENDED_DECISION`] when the run
    /// ended first.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub rationale: Option<String>,
    pub decided_at: Option<Ts>,
    /// What is asked, beyond the summary: for a tool call, the tool, its
    /// kind, arguments, risk and arguments schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Arguments the approver gave in place of the ones asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// The decision an approval still pending gets when its run ends (stopped,
/// cancelled, failed, …): nobody can decide it any more. Written in the same
/// transaction as the run's end, with an `approval_decided` event.
pub const ENDED_DECISION: &str = "cancelled";
/// Who decided an approval whose run ended first.
pub const ENDED_BY: &str = "dispatch";
/// Why.
pub const ENDED_RATIONALE: &str = "the run ended before a decision";

/// A decision on an approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `approve` or `deny`.
    pub decision: String,
    pub by: String,
    pub rationale: Option<String>,
    pub at: Ts,
    /// With `approve`: arguments to use in place of the ones asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// A run whose attempts are exhausted: its last checkpoint and error history
/// (its input is the run's payload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub run_id: RunId,
    pub at: Ts,
    pub reason: String,
    pub attempts: u32,
    pub checkpoint: Option<Value>,
    /// One entry per failed attempt: `{"attempt", "status", "exit_code", "error"}`.
    pub errors: Value,
    /// The run that replayed it, once replayed.
    pub replayed_by: Option<RunId>,
}

#[async_trait]
pub trait ReliabilityStore: Send + Sync {
    /// Creates the run (queued, with its `created` event) and its extras in
    /// one transaction. When `dedupe` is set and `extras.idempotency_key` is
    /// given, a run with the same key that is live or succeeded is returned as
    /// [`Created::Existing`] and nothing is inserted (even when that run holds
    /// `extras.session`: the same key answers the same run). Otherwise, when
    /// `extras.session` is given and a live run holds it, `SessionBusy` and
    /// nothing is inserted.
    async fn create_run_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        dedupe: bool,
    ) -> StoreResult<Created>;

    /// Creates every run of `batch` as [`Self::create_run_with`] does
    /// without `dedupe`, all in one transaction: all or none (a fan-out's
    /// members, created at once).
    async fn create_runs_with(&self, batch: &[(NewRun, RunExtras)]) -> StoreResult<Vec<Created>>;

    /// The extras stored with the run (all `None` for a run created plainly).
    async fn run_extras(&self, id: &RunId) -> StoreResult<RunExtras>;

    /// Records a pending approval and appends an `approval_requested` event.
    /// Asking again for the same `(run, id)` returns the stored one unchanged.
    async fn request_approval(&self, approval: &Approval) -> StoreResult<Approval>;

    /// Decides a pending approval and appends an `approval_decided` event.
    /// `ApprovalNotFound` when unknown; `AlreadyDecided` when decided before
    /// (the first decision stands).
    async fn decide_approval(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
    ) -> StoreResult<Approval>;

    /// Approvals, oldest first: of one run, or of every run; only pending ones
    /// when `pending_only`.
    async fn list_approvals(
        &self,
        run: Option<&RunId>,
        pending_only: bool,
    ) -> StoreResult<Vec<Approval>>;

    /// Dead-letters a run (the run must exist). Recording the same run again
    /// keeps the first record.
    async fn add_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()>;

    /// Every dead letter, newest first.
    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>>;

    /// The dead letter of `run`, if it was dead-lettered.
    async fn dead_letter(&self, run: &RunId) -> StoreResult<Option<DeadLetter>>;

    /// Notes that `by` replays the dead-lettered `run`.
    async fn mark_replayed(&self, run: &RunId, by: &RunId) -> StoreResult<()>;

    /// Decides approval `approval_id` of `run` as [`Self::decide_approval`]
    /// does and moves the run from the state saved at `expected_version`
    /// on with `write`, in one transaction: both are saved or neither (a
    /// person's decision on a run in review queues or cancels it with the
    /// decision). `Conflict` when the version moved on, and nothing is
    /// decided; `ApprovalNotFound`, `AlreadyDecided` as `decide_approval`.
    async fn decide_approval_moving(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
        expected_version: i64,
        write: &crate::StateWrite,
    ) -> StoreResult<(Approval, Run)>;
}
