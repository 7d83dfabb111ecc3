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

use dispatch_core::{Status, Transition, now_ms};
use dispatch_store::{Approval, Decision, REVIEW_APPROVAL, Run, StateWrite, Store, StoreError};
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

/// What the decision does to the run.
fn transition(decision: &Decision) -> Transition {
    let at = now_ms();
    if decision.decision == "approve" {
        return Transition::Approve { at };
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
