//! The permission review: a run the policy's `review` rule sends to a
//! person is created in `review` (see [`dispatch_store::RunExtras::review`]),
//! holding no process, no worker and no queue slot, with the approval
//! [`REVIEW_APPROVAL`] pending. Deciding that approval decides the run, in
//! the same transaction: approved, it is queued for its first attempt;
//! denied, it ends `cancelled` (a service: `stopped`) with the reviewer and
//! the rationale in its reason.
//!
//! A denied run ends `cancelled`, not `failed`: nothing ran and nothing
//! broke, so it is neither retried nor dead-lettered nor counted as a
//! failure, exactly like a run stopped before it started.
//!
//! A review may have a deadline (`dispatch server --review-timeout`, or
//! `DISPATCH_REVIEW_TIMEOUT` where a local run is created): the review
//! approval's own deadline, as an agent's approval has its `timeout_s`.
//! Like an approval that times out, a review nobody decided by then is
//! denied ([`REVIEW_DEADLINE_BY`]), so the run ends `cancelled` (for the
//! reasons above) with a reason naming the deadline, and the approvers are
//! notified (`review.expired`, written in the same transaction). On a
//! cluster every server looks each second ([`expire_due`]); locally,
//! whoever reads the run (`ps`, `inspect-run`, `wait`) ends it.

use dispatch_core::{Status, Transition, now_ms};
use dispatch_store::{
    Approval, Decision, REVIEW_APPROVAL, REVIEW_DEADLINE_BY, Run, StateWrite, Store, StoreError,
};
use serde_json::json;

use crate::error::{RuntimeError, RuntimeResult};
use crate::record::state_event;

/// Whether deciding `approval_id` of `run` decides its review.
pub fn decides_review(run: &Run, approval_id: &str) -> bool {
    approval_id == REVIEW_APPROVAL && run.status() == Status::Review
}

/// Records `decision` on the review of `run` and moves the run with it:
/// `approve` queues it, `deny` cancels it. The first decision stands (a
/// second one is `AlreadyDecided`, and changes nothing).
pub async fn decide<S: Store + ?Sized>(
    store: &S,
    run: &Run,
    decision: &Decision,
) -> RuntimeResult<(Approval, Run)> {
    let mut run = run.clone();
    for _ in 0..5 {
        if run.status() != Status::Review {
            // Decided (or stopped) meanwhile: the store says which.
            let a = store
                .decide_approval(&run.id, REVIEW_APPROVAL, decision)
                .await?;
            return Ok((a, store.get_run(&run.id).await?));
        }
        let t = transition(decision);
        let next = run
            .state
            .apply(run.operation, &t)
            .map_err(|e| RuntimeError::BadDecision(e.to_string()))?;
        let mut event = state_event(&run, &next, None);
        event.data["by"] = json!(decision.by);
        if let Some(r) = &decision.rationale {
            event.data["rationale"] = json!(r);
        }
        let write = StateWrite::new(next, event);
        match store
            .decide_approval_moving(&run.id, REVIEW_APPROVAL, decision, run.version, &write)
            .await
        {
            Ok(done) => return Ok(done),
            Err(StoreError::Conflict { .. }) => run = store.get_run(&run.id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict {
        expected: run.version,
        id: run.id,
    }
    .into())
}

/// The environment variable that gives a local run's review a deadline
/// (and `dispatch server --review-timeout`'s default), like `24h`.
pub const TIMEOUT_ENV: &str = "DISPATCH_REVIEW_TIMEOUT";

/// A review timeout as written (`30m`, `24h`, `7d`): its milliseconds, or
/// one line saying what is wrong.
pub fn parse_timeout(what: &str, text: &str) -> Result<i64, String> {
    match dispatch_core::time::parse_age(text) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(format!(
            "{what} `{text}` is not a duration (hint: like 30m, 24h or 7d)"
        )),
    }
}

/// The deadline of a local run's review: `DISPATCH_REVIEW_TIMEOUT`, when set.
pub fn local_timeout() -> RuntimeResult<Option<i64>> {
    match std::env::var(TIMEOUT_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_timeout(TIMEOUT_ENV, text.trim())
            .map(Some)
            .map_err(RuntimeError::Policy),
        _ => Ok(None),
    }
}

/// Ends `run` when it waits in review past its review's deadline: the
/// review is denied by [`REVIEW_DEADLINE_BY`] and the run cancelled, in
/// one transaction (with its `review.expired` notification). `None` when
/// it is not due (or someone decided first).
pub async fn expire_if_due<S: Store + ?Sized>(store: &S, run: &Run) -> RuntimeResult<Option<Run>> {
    if run.status() != Status::Review {
        return Ok(None);
    }
    let pending = store.list_approvals(Some(&run.id), true).await?;
    let Some(review) = pending.iter().find(|a| a.id == REVIEW_APPROVAL) else {
        return Ok(None);
    };
    expire(store, run, review).await
}

/// Ends every run whose review's deadline has passed (see
/// [`expire_if_due`]); the runs it ended. Several servers may look at
/// once: each run is ended by one of them, the others find it decided.
pub async fn expire_due<S: Store + ?Sized>(store: &S) -> RuntimeResult<Vec<Run>> {
    let now = now_ms();
    let mut ended = Vec::new();
    for review in store.list_approvals(None, true).await? {
        let due = review.id == REVIEW_APPROVAL && review.deadline.is_some_and(|d| d <= now);
        if !due {
            continue;
        }
        let run = store.get_run(&review.run_id).await?;
        if let Some(run) = expire(store, &run, &review).await? {
            ended.push(run);
        }
    }
    Ok(ended)
}

async fn expire<S: Store + ?Sized>(
    store: &S,
    run: &Run,
    review: &Approval,
) -> RuntimeResult<Option<Run>> {
    let Some(deadline) = review.deadline.filter(|d| *d <= now_ms()) else {
        return Ok(None);
    };
    let waited = dispatch_core::time::human_duration(deadline - review.requested_at);
    let decision = Decision {
        decision: "deny".into(),
        by: REVIEW_DEADLINE_BY.into(),
        rationale: Some(format!(
            "review deadline passed: nobody decided within {waited} (review timeout)"
        )),
        at: now_ms(),
        input: None,
    };
    match decide(store, run, &decision).await {
        Ok((_, ended)) => Ok(ended.state.is_terminal().then_some(ended)),
        // A person (or another server) decided first: that stands.
        Err(RuntimeError::Store(StoreError::AlreadyDecided { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the decision does to the run.
fn transition(decision: &Decision) -> Transition {
    let at = now_ms();
    if decision.decision == "approve" {
        return Transition::Approve { at };
    }
    if decision.by == REVIEW_DEADLINE_BY {
        // The deadline is named as such, not as a reviewer.
        return Transition::Cancel {
            reason: format!(
                "cancelled before it started: {}",
                decision
                    .rationale
                    .as_deref()
                    .unwrap_or("review deadline passed")
            ),
            exit_code: None,
            at,
        };
    }
    let why = match decision.rationale.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => format!(": {r}"),
        _ => String::new(),
    };
    Transition::Cancel {
        reason: format!("denied in review by {}{why}", decision.by),
        exit_code: None,
        at,
    }
}
