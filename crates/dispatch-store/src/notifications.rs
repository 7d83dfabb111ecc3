//! The notification outbox: what happened that a person may want to hear
//! about (an approval asked for, a run that failed, a budget mark crossed),
//! written in the same transaction as the change that caused it, and drained
//! by whichever process delivers notifications (`dispatch-notify`).
//!
//! A row is the event, not a delivery: the deliverer decides from its
//! configuration which channels hear of it, records the ones that did
//! (`sent`), and settles the row when every channel has it or has been
//! given up on. A row is keyed: enqueuing the same key twice keeps the
//! first (an approval asked again, an escalation found due by two servers).
//! Rows go with their run (deleted with it).

use async_trait::async_trait;
use dispatch_core::parcel::Limits;
use dispatch_core::{RunId, RunState, Status, Ts};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Approval, StoreResult};

/// A new approval is waiting for a person.
pub const APPROVAL_REQUESTED: &str = "approval.requested";
/// An approval has waited past an escalation step.
pub const APPROVAL_ESCALATED: &str = "approval.escalated";
/// A run ended `failed` or `timed_out` (its retries, if any, spent).
pub const RUN_FAILED: &str = "run.failed";
/// A run's usage crossed a mark of its `LIMIT TOKENS` or `LIMIT COST`.
pub const BUDGET_THRESHOLD: &str = "budget.threshold";
/// A project's usage crossed the soft mark of a quota (once per quota
/// and period).
pub const QUOTA_SOFT: &str = "quota.soft";
/// A project's usage reached the hard limit of a quota (once per quota
/// and period).
pub const QUOTA_HARD: &str = "quota.hard";
/// A run waited in review past its deadline and was cancelled (nobody
/// decided in time).
pub const REVIEW_EXPIRED: &str = "review.expired";
/// Every kind, in the order the docs list them.
pub const KINDS: [&str; 7] = [
    APPROVAL_REQUESTED,
    APPROVAL_ESCALATED,
    REVIEW_EXPIRED,
    RUN_FAILED,
    BUDGET_THRESHOLD,
    QUOTA_SOFT,
    QUOTA_HARD,
];

/// The marks of a run's budget (percent of its hard limit) recorded as
/// [`BUDGET_THRESHOLD`] rows when usage crosses them; which of them notify
/// is the configuration's choice.
pub const BUDGET_MARKS: [u32; 4] = [50, 80, 90, 100];

/// A notification to enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewNotification {
    /// Unique: a second notification with the same key is not enqueued.
    pub key: String,
    pub run_id: RunId,
    /// One of [`KINDS`].
    pub kind: String,
    /// What the message says (kind-specific, see the builders below).
    pub data: Value,
    pub at: Ts,
}

/// A notification in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub seq: i64,
    pub key: String,
    pub run_id: RunId,
    pub kind: String,
    pub data: Value,
    pub created_at: Ts,
    /// When it is next tried (or, while held by a deliverer, when the hold ends).
    pub due_at: Ts,
    /// Delivery rounds so far.
    pub tries: u32,
    /// The channels that have it.
    pub sent: Vec<String>,
    pub last_error: Option<String>,
    /// `delivered`, `failed` (given up) or `skipped` (no channel wanted
    /// it) once settled.
    pub outcome: Option<String>,
    pub done_at: Option<Ts>,
}

/// The outcome of one delivery round of a notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Settle {
    /// Every channel that has it now.
    pub sent: Vec<String>,
    pub tries: u32,
    pub error: Option<String>,
    /// `Some(outcome)` settles it for good; `None` leaves it due at `next_at`.
    pub outcome: Option<String>,
    pub next_at: Ts,
    pub at: Ts,
}

/// How many notifications are in each state (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationCounts {
    /// Not settled yet.
    pub pending: u64,
    /// Not settled, and tried at least once without success.
    pub retrying: u64,
    pub delivered: u64,
    /// Given up on.
    pub failed: u64,
    pub skipped: u64,
}

/// The outbox.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Enqueues `n` unless a notification with its key exists; `true` when
    /// it was enqueued. `NotFound` when its run does not exist.
    async fn enqueue_notification(&self, n: &NewNotification) -> StoreResult<bool>;

    /// Takes up to `limit` unsettled notifications due at `now`, oldest
    /// first, holding each until `now + hold_ms` (another deliverer takes
    /// it over after that).
    async fn claim_notifications(
        &self,
        now: Ts,
        hold_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Notification>>;

    /// Records a delivery round of notification `seq`.
    async fn settle_notification(&self, seq: i64, settle: &Settle) -> StoreResult<()>;

    /// The newest `limit` notifications, newest first.
    async fn list_notifications(&self, limit: usize) -> StoreResult<Vec<Notification>>;

    /// Counts by state.
    async fn notification_counts(&self) -> StoreResult<NotificationCounts>;
}

/// The notification of a new approval (its key: the approval's).
pub fn approval_requested(a: &Approval) -> NewNotification {
    NewNotification {
        key: format!("approval:{}:{}", a.run_id, a.id),
        run_id: a.run_id.clone(),
        kind: APPROVAL_REQUESTED.into(),
        data: approval_data(a),
        at: a.requested_at,
    }
}

/// The notification of escalation step `step` (1-based) of approval `a`.
pub fn approval_escalated(a: &Approval, step: usize, after_ms: u64, at: Ts) -> NewNotification {
    let mut data = approval_data(a);
    data["escalation"] = json!({"step": step, "after_ms": after_ms});
    NewNotification {
        key: format!("escalate:{}:{}:{step}", a.run_id, a.id),
        run_id: a.run_id.clone(),
        kind: APPROVAL_ESCALATED.into(),
        data,
        at,
    }
}

fn approval_data(a: &Approval) -> Value {
    json!({
        "approval": {
            "id": a.id,
            "summary": a.summary,
            "attempt": a.attempt,
            "requested_at": a.requested_at,
            "deadline": a.deadline,
            "details": a.details,
        }
    })
}

/// The notification of a run cancelled because its review (approval `a`)
/// was not decided by its deadline; `reason` is the run's end.
pub fn review_expired(a: &Approval, reason: &str, at: Ts) -> NewNotification {
    let mut data = approval_data(a);
    data["reason"] = json!(reason);
    NewNotification {
        key: format!("review-expired:{}", a.run_id),
        run_id: a.run_id.clone(),
        kind: REVIEW_EXPIRED.into(),
        data,
        at,
    }
}

/// The notification of a run that ended in `state`, when it failed or
/// timed out; `None` for any other end.
pub fn run_failed(run: &RunId, attempt: u32, state: &RunState, at: Ts) -> Option<NewNotification> {
    let status = state.status();
    if !matches!(status, Status::Failed | Status::TimedOut) {
        return None;
    }
    Some(NewNotification {
        key: format!("failed:{run}"),
        run_id: run.clone(),
        kind: RUN_FAILED.into(),
        data: json!({
            "status": status.as_str(),
            "reason": state.reason(),
            "exit_code": state.exit_code(),
            "attempt": attempt,
        }),
        at,
    })
}

/// The [`BUDGET_THRESHOLD`] notifications of a run whose usage went from
/// `before` to `after` (tokens, cost) under `limits`: one per mark of
/// [`BUDGET_MARKS`] crossed, of each limit the run has.
pub fn budget_crossed(
    run: &RunId,
    before: (u64, f64),
    after: (u64, f64),
    limits: &Limits,
    at: Ts,
) -> Vec<NewNotification> {
    let mut out = Vec::new();
    let mut mark = |which: &str, was: f64, now: f64, limit: f64, used: Value, max: Value| {
        if limit <= 0.0 {
            return;
        }
        for pct in BUDGET_MARKS {
            let line = limit * f64::from(pct) / 100.0;
            if was < line && now >= line {
                out.push(NewNotification {
                    key: format!("budget:{run}:{which}:{pct}"),
                    run_id: run.clone(),
                    kind: BUDGET_THRESHOLD.into(),
                    data: json!({"limit": which, "percent": pct, "used": used, "max": max}),
                    at,
                });
            }
        }
    };
    if let Some(max) = limits.max_tokens {
        #[allow(clippy::cast_precision_loss)] // token counts far below 2^52
        mark(
            "tokens",
            before.0 as f64,
            after.0 as f64,
            max as f64,
            json!(after.0),
            json!(max),
        );
    }
    if let Some(max) = limits.max_cost_usd {
        mark("cost", before.1, after.1, max, json!(after.1), json!(max));
    }
    out
}

/// The limits in a run's stored policy (`runs.policy`), if it has any.
pub(crate) fn limits_of(policy: Option<&str>) -> Option<Limits> {
    let policy: dispatch_core::policy::RunPolicy = serde_json::from_str(policy?).ok()?;
    let l = policy.limits;
    (l.max_tokens.is_some() || l.max_cost_usd.is_some()).then_some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_mark_is_crossed_once_and_only_upwards() {
        let run = RunId::new();
        let limits = Limits {
            max_tokens: Some(1000),
            max_cost_usd: Some(1.0),
            ..Limits::default()
        };
        let crossed = budget_crossed(&run, (0, 0.0), (850, 0.2), &limits, 1);
        let marks: Vec<_> = crossed
            .iter()
            .map(|n| (n.data["limit"].clone(), n.data["percent"].clone()))
            .collect();
        assert_eq!(
            marks,
            vec![(json!("tokens"), json!(50)), (json!("tokens"), json!(80))]
        );
        assert!(budget_crossed(&run, (850, 0.2), (870, 0.3), &limits, 2).is_empty());
        let cost = budget_crossed(&run, (870, 0.3), (870, 1.5), &limits, 3);
        assert_eq!(cost.len(), 4, "{cost:?}");
        assert!(budget_crossed(&run, (0, 0.0), (5000, 9.0), &Limits::default(), 4).is_empty());
    }
}
