//! Stopping a run: record the request, SIGTERM the agent's process group,
//! wait out the grace period, SIGKILL the group. The helper records the end
//! (`cancelled`, or `stopped` for a service); if the helper is gone too, the
//! reader-side reconciliation does.

use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Run, StateWrite, Store, StoreError};
use nix::sys::signal::Signal;

use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;
use crate::os;
use crate::reconcile::reconcile;
use crate::record::state_event;

const POLL: Duration = Duration::from_millis(10);
/// How long after SIGKILL we wait for the helper to record the end before we
/// kill the helper too and let reconciliation record it.
const HELPER_PATIENCE: Duration = Duration::from_secs(10);
/// How long past the grace period a container's runtime has to kill it
/// before its client's group is killed (the helper then removes it).
const CONTAINER_SLACK: Duration = Duration::from_secs(3);

/// Stops `id` and returns the run in its terminal state.
pub async fn stop<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    grace: Duration,
    force: bool,
) -> RuntimeResult<Run> {
    let run = reconcile(store, layout, store.get_run(id).await?).await?;
    if run.state.is_terminal() {
        return Err(RuntimeError::AlreadyFinished {
            id: id.to_string(),
            status: run.status(),
        });
    }
    store.request_stop(id, now_ms()).await?;
    if run.operation == dispatch_core::Operation::Service {
        return crate::service::stop::stop(store, layout, id, grace, force).await;
    }
    let grace = if force { Duration::ZERO } else { grace };
    let started = Instant::now();
    let mut termed = false;
    let mut killed = false;
    let mut contained = false;
    loop {
        let run = reconcile(store, layout, store.get_run(id).await?).await?;
        if run.state.is_terminal() {
            return Ok(run);
        }
        let elapsed = started.elapsed();
        if matches!(run.status(), Status::Queued | Status::Created) {
            cancel_unheld(store, layout, &run, "cancelled before it started").await?;
            continue;
        }
        if run.status() == Status::Review {
            cancel_unheld(store, layout, &run, "cancelled in review").await?;
            continue;
        }
        if let dispatch_core::RunState::Suspended { reason, .. } = &run.state {
            // No process to signal: suspended runs hold none.
            cancel_unheld(store, layout, &run, &format!("cancelled while {reason}")).await?;
            continue;
        }
        if let Some(agent) = run.state.agent() {
            if !termed {
                // A container is stopped by its runtime: TERM, grace, KILL.
                contained = crate::container::stop(layout, id, grace, force);
                if !contained && !force {
                    os::signal_group(agent.pid, Signal::SIGTERM);
                }
                termed = true;
            }
            let slack = if contained {
                CONTAINER_SLACK
            } else {
                Duration::ZERO
            };
            if !killed && elapsed >= grace + slack {
                os::signal_group(agent.pid, Signal::SIGKILL);
                killed = true;
            }
        }
        if elapsed >= grace + HELPER_PATIENCE {
            // The helper does not answer: end it; reconciliation records the stop.
            if let Some(helper) = run.state.helper() {
                os::signal_process(helper, Signal::SIGKILL);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Cancels a run no process holds (created, in review, queued or suspended). Its
/// pending approvals end `cancelled` with it (the store does that in the
/// same transaction), and its workspace goes, as at any end (an overlay is
/// unmounted), unless it asked to keep it.
async fn cancel_unheld<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &Run,
    reason: &str,
) -> RuntimeResult<()> {
    let t = Transition::Cancel {
        reason: reason.to_string(),
        exit_code: None,
        at: now_ms(),
    };
    let Ok(state) = run.state.apply(run.operation, &t) else {
        return Ok(());
    };
    let event = state_event(run, &state, None);
    let write = StateWrite::new(state, event);
    match store.transition(&run.id, run.version, &write).await {
        Ok(_) => {
            let keep = store
                .run_extras(&run.id)
                .await
                .is_ok_and(|e| e.keep_workspace);
            if !keep {
                crate::workspace::release(layout, &run.id);
            }
            Ok(())
        }
        Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
