//! Between attempts: deciding whether to try again, requeueing with a
//! backoff, waiting it out, and dead-lettering a run that is out of attempts.

use dispatch_core::EventKind;
use std::time::Duration;

use dispatch_core::policy::RunPolicy;
use dispatch_core::time::human_duration;
use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{DeadLetter, Run, StateWrite, Store, StoreError, StoreResult};
use serde_json::{Value, json};

use crate::record::state_event;

/// How often a helper waiting out a backoff looks for a cancellation.
const BACKOFF_POLL: Duration = Duration::from_millis(50);
/// How many lost helpers one run may survive (each is free; this stops a loop).
pub(crate) const MAX_LOST_RECOVERIES: u32 = 3;

/// The run's effective policy: the one stored at dispatch, else the parcel's.
pub(crate) fn policy_of(
    extras: Option<&dispatch_store::RunExtras>,
    manifest: Option<&dispatch_core::parcel::Manifest>,
) -> RunPolicy {
    let stored = extras
        .and_then(|e| e.policy.clone())
        .and_then(|p| serde_json::from_value(p).ok());
    match (stored, manifest) {
        (Some(p), _) => p,
        (None, Some(m)) => RunPolicy::resolve(m, &Default::default()),
        (None, None) => RunPolicy::default(),
    }
}

/// Every event of the run, oldest first.
pub(crate) async fn all_events<S: Store + ?Sized>(
    store: &S,
    id: &RunId,
) -> Vec<dispatch_store::Event> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let Ok(page) = store.list_events(id, after, 1000).await else {
            return out;
        };
        let Some(last) = page.last() else { return out };
        after = last.seq;
        let done = page.len() < 1000;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// How many requeues were lost-helper recoveries (they cost no attempt).
pub(crate) async fn lost_recoveries<S: Store + ?Sized>(store: &S, id: &RunId) -> u32 {
    all_events(store, id)
        .await
        .iter()
        // A lost helper's attempt, or one that ended in a durable wait (woken).
        .filter(|e| {
            e.event.is(EventKind::State)
                && (e.event.data["lost"] == json!(true) || e.event.data.get("resume").is_some())
        })
        .count() as u32
}

/// The last `checkpoint` event of any earlier attempt.
pub(crate) async fn last_checkpoint<S: Store + ?Sized>(store: &S, id: &RunId) -> Option<Value> {
    checkpoint_in(&all_events(store, id).await)
}

/// The checkpoint `events` leave: the last `checkpoint` event, whole (a
/// native agent's deltas folded, see [`dispatch_core::checkpoint`]).
pub(crate) fn checkpoint_in(events: &[dispatch_store::Event]) -> Option<Value> {
    dispatch_core::checkpoint::fold(
        events
            .iter()
            .filter(|e| e.event.is(EventKind::Checkpoint))
            .map(|e| &e.event.data),
    )
}

/// How a failed attempt ended, for its requeue record.
pub(crate) struct AttemptFailure {
    pub reason: String,
    pub exit_code: Option<i32>,
    pub status: Status,
}

/// Puts the run back in the queue, not before `not_before`, recording why
/// the attempt ended (the store closes it with that status and error).
pub(crate) async fn requeue<S: Store + ?Sized>(
    store: &S,
    run: &mut Run,
    failure: &AttemptFailure,
    not_before: i64,
    lost: bool,
) -> StoreResult<bool> {
    let t = Transition::Requeue {
        not_before: Some(not_before),
        at: now_ms(),
    };
    for _ in 0..5 {
        let Ok(next) = run.state.apply(run.operation, &t) else {
            return Ok(false);
        };
        let mut event = state_event(run, &next, None);
        event.data["reason"] = json!(failure.reason);
        event.data["exit_code"] = json!(failure.exit_code);
        event.data["attempt_status"] = json!(failure.status);
        event.data["not_before"] = json!(not_before);
        if lost {
            event.data["lost"] = json!(true);
        }
        let write = StateWrite::new(next, event);
        match store.transition(&run.id, run.version, &write).await {
            Ok(updated) => {
                *run = updated;
                return Ok(true);
            }
            Err(StoreError::Conflict { .. }) => *run = store.get_run(&run.id).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Waits until a queued run is due. Returns the run, or `None` when it left
/// the queue meanwhile (cancelled by `dispatch stop`).
pub(crate) async fn wait_until_due<S: Store + ?Sized>(
    store: &S,
    id: &RunId,
) -> StoreResult<Option<Run>> {
    loop {
        let run = store.get_run(id).await?;
        let dispatch_core::RunState::Queued { not_before } = run.state else {
            return Ok(None);
        };
        if run.stop_requested_at.is_some() {
            return Ok(Some(run)); // the claim path records the cancellation
        }
        let wait = not_before.unwrap_or(0) - now_ms();
        if wait <= 0 {
            return Ok(Some(run));
        }
        tokio::time::sleep(BACKOFF_POLL.min(Duration::from_millis(wait as u64))).await;
    }
}

/// What the backoff line in the log says: the store's attempt number
/// first (as `dispatch logs --attempt` finds it), and how many attempts
/// counted against the retries when that differs (a wake or a lost helper
/// cost none), as the attempt's first line says it.
pub(crate) fn retry_line(
    failure: &AttemptFailure,
    attempt: u32,
    used: u32,
    max: u32,
    wait_ms: u64,
) -> String {
    let which = match used == attempt {
        true => format!("attempt {attempt} of {max}"),
        false => format!("attempt {attempt} (counts as {used} of {max})"),
    };
    format!(
        "{which} {}: {}; retrying in {}",
        failure.status,
        failure.reason,
        human_duration(wait_ms as i64)
    )
}

/// Dead-letters a job or heartbeat that ended failed or timed out: its error
/// history (one entry per attempt) and last checkpoint.
pub(crate) async fn dead_letter<S: Store + ?Sized>(
    store: &S,
    run: &Run,
    checkpoint: Option<Value>,
) {
    if !matches!(run.status(), Status::Failed | Status::TimedOut)
        || run.operation == dispatch_core::Operation::Service
    {
        return;
    }
    let attempts = store.list_attempts(&run.id).await.unwrap_or_default();
    let errors: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({"attempt": a.number, "status": a.status, "exit_code": a.exit_code,
                   "error": a.error, "started_at": a.started_at, "ended_at": a.ended_at})
        })
        .collect();
    let checkpoint = match checkpoint {
        Some(c) => Some(c),
        None => last_checkpoint(store, &run.id).await,
    };
    let letter = DeadLetter {
        run_id: run.id.clone(),
        at: now_ms(),
        reason: run.state.reason().unwrap_or("failed").to_string(),
        attempts: run.attempt,
        checkpoint,
        errors: Value::Array(errors),
        replayed_by: None,
    };
    if let Err(e) = store.add_dead_letter(&letter).await {
        crate::say_warn!("[dispatch] could not dead-letter run {}: {e}", run.id);
    }
}
