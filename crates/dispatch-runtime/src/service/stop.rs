//! Stopping a service: SIGTERM to its helper (which closes its listeners,
//! cancels wakes that never started and waits for running ones), then, once
//! the grace period is over, the running wakes are ended (their helpers
//! record `cancelled`), and if the helper still does not finish it is killed
//! and reconciliation records `stopped`.

use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Run, RunFilter, Store};
use nix::sys::signal::Signal;

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::os;
use crate::reconcile::reconcile;
use crate::record::advance;

const POLL: Duration = Duration::from_millis(10);
/// How long after the grace period we wait for the helper before killing it.
const HELPER_PATIENCE: Duration = Duration::from_secs(5);

const LIVE: [Status; 4] = [
    Status::Queued,
    Status::Starting,
    Status::Running,
    Status::Paused,
];

/// Stops the service `id` (its stop already requested); returns it terminal.
pub async fn stop<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    grace: Duration,
    force: bool,
) -> RuntimeResult<Run> {
    let grace = if force { Duration::ZERO } else { grace };
    let started = Instant::now();
    let mut termed = false;
    let mut helper_killed = false;
    loop {
        let mut run = reconcile(store, layout, store.get_run(id).await?).await?;
        if run.state.is_terminal() {
            return Ok(run);
        }
        if matches!(
            run.status(),
            Status::Queued | Status::Created | Status::Review
        ) {
            let t = Transition::Cancel {
                reason: "cancelled before it started".into(),
                exit_code: None,
                at: now_ms(),
            };
            let _ = advance(store, &mut run, &t, None).await;
            continue;
        }
        let elapsed = started.elapsed();
        if let Some(helper) = run.state.helper() {
            if !termed {
                os::signal_process(helper, Signal::SIGTERM);
                termed = true;
            }
            if !helper_killed && elapsed >= grace + HELPER_PATIENCE {
                os::signal_process(helper, Signal::SIGKILL);
                helper_killed = true;
            }
        }
        if elapsed >= grace {
            end_wakes(store, id).await?;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends the service's running wakes: stop requested, agent group killed.
async fn end_wakes<S: Store + ?Sized>(store: &S, id: &RunId) -> RuntimeResult<()> {
    let filter = RunFilter {
        statuses: LIVE.to_vec(),
        parent_id: Some(id.clone()),
        ..RunFilter::default()
    };
    for child in store.list_runs(&filter).await? {
        if child.stop_requested_at.is_none() {
            store.request_stop(&child.id, now_ms()).await?;
        }
        if let Some(agent) = child.state.agent() {
            os::signal_group(agent.pid, Signal::SIGKILL);
        }
    }
    Ok(())
}

/// Cancels the wakes a dead service left `queued` (nobody else would ever
/// start them). Called by reconciliation once the service is terminal.
pub async fn cancel_orphans<S: Store + ?Sized>(store: &S, service: &Run) {
    let filter = RunFilter {
        statuses: vec![Status::Queued],
        parent_id: Some(service.id.clone()),
        ..RunFilter::default()
    };
    let Ok(orphans) = store.list_runs(&filter).await else {
        return;
    };
    for mut run in orphans {
        let t = Transition::Cancel {
            reason: format!("service {} ended before this wake ran", service.id),
            exit_code: None,
            at: now_ms(),
        };
        let _ = advance(store, &mut run, &t, None).await;
    }
}
