//! Lost-helper recovery: when a reader finds that the helper of a job or
//! heartbeat died without leaving a result, and the run's policy allows more
//! attempts, the run goes back to the queue and a fresh helper is spawned.
//! Recovery does not consume an attempt (the requeue is marked `lost`), and
//! one run survives at most [`MAX_LOST_RECOVERIES`] lost helpers.

use dispatch_core::{Operation, Status, now_ms};
use dispatch_store::{Run, Store, StoreResult};

use crate::helper::retry::{self, AttemptFailure, MAX_LOST_RECOVERIES};
use crate::launch::spawn_helper;
use crate::layout::Layout;
use crate::snapshot;

/// Requeues `run` and spawns a helper for it when recovery applies. Returns
/// the requeued run, or `None` when the caller should fail the run as lost.
pub(crate) async fn try_recover<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &Run,
    helper_pid: u32,
) -> StoreResult<Option<Run>> {
    if run.operation == Operation::Service
        || run.stop_requested_at.is_some()
        || snapshot::read(layout, &run.id).is_some()
    {
        return Ok(None);
    }
    let manifest = dispatch_core::parcel::load(&layout.parcels().join(&run.parcel_digest))
        .ok()
        .map(|p| p.manifest);
    let extras = store.run_extras(&run.id).await.ok();
    let policy = retry::policy_of(extras.as_ref(), manifest.as_ref());
    let lost = retry::lost_recoveries(store, &run.id).await;
    let used = run.attempt.saturating_sub(lost);
    // A workflow's coordinator keeps its state in the store: a new one
    // resumes where the lost one was, whatever the retry policy.
    let coordinator =
        manifest.as_ref().map(|m| m.courier) == Some(dispatch_core::parcel::Courier::Workflow);
    let no_retry = policy.max_attempts() <= 1 || used > policy.max_attempts();
    if (no_retry && !coordinator) || lost >= MAX_LOST_RECOVERIES {
        return Ok(None);
    }
    let Ok(exe) = std::env::current_exe() else {
        return Ok(None);
    };
    let failure = AttemptFailure {
        reason: format!(
            "helper process {helper_pid} died without recording a result; recovering (this does not count as an attempt)"
        ),
        exit_code: None,
        status: Status::Failed,
    };
    let mut requeued = run.clone();
    if !retry::requeue(store, &mut requeued, &failure, now_ms(), true).await? {
        return Ok(None);
    }
    crate::approvals::expire_pending(store, &run.id, "the helper was lost before a decision").await;
    if let Err(e) = spawn_helper(layout, &exe, &requeued.id) {
        crate::say_warn!(
            "warning: run {} was requeued but no helper could start: {e}",
            run.id
        );
    }
    Ok(Some(requeued))
}

/// How long past its `not_before` a requeued run may stay queued before a
/// reader assumes the helper that was waiting out the backoff is gone.
const OVERDUE_SLACK_MS: i64 = 3_000;

/// Spawns a helper for a run waiting for its next attempt whose backoff
/// ended well ago: the helper that was waiting died. A marker file in the
/// run's directory makes it one spawn per backoff; even if two helpers
/// started, only one would win the claim (a compare-and-set).
pub(crate) fn revive_overdue(layout: &Layout, run: &Run) {
    let dispatch_core::RunState::Queued {
        not_before: Some(due),
    } = run.state
    else {
        return;
    };
    if now_ms() < due + OVERDUE_SLACK_MS || run.stop_requested_at.is_some() {
        return;
    }
    spawn_once(layout, run, due, "is overdue");
}

/// Spawns a helper for queued `run`, once per `due` (the first caller to
/// create the marker spawns); `why` says why in a warning if it cannot.
pub(crate) fn spawn_once(layout: &Layout, run: &Run, due: i64, why: &str) {
    let marker = layout.run_dir(&run.id).join(format!("revived-{due}"));
    let first = std::fs::create_dir_all(layout.run_dir(&run.id)).is_ok()
        && std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
    if !first {
        return;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Err(e) = spawn_helper(layout, &exe, &run.id)
    {
        crate::say_warn!(
            "warning: run {} {why} but no helper could start: {e}",
            run.id
        );
    }
}
