//! Readers drive runs whose helper died to a terminal state, so nothing
//! stays stuck: a terminal snapshot wins; otherwise a stopped run is
//! `cancelled`, a service `stopped` and a job or heartbeat `failed`, each with
//! the reason. A run in review past its deadline is cancelled (see
//! [`crate::review`]).

use dispatch_core::{Status, Transition, now_ms};
use dispatch_store::{Run, StateWrite, Store, StoreError, StoreResult};
use nix::sys::signal::Signal;

use crate::layout::Layout;
use crate::os;
use crate::record::state_event;
use crate::snapshot;

/// Reconciles `run` if its helper is gone. Returns the run as it now stands.
pub async fn reconcile<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: Run,
) -> StoreResult<Run> {
    let mut run = run;
    for _ in 0..5 {
        if matches!(run.state, dispatch_core::RunState::Suspended { .. }) {
            // Daemonless: a durable wait that ran out is woken by whoever looks.
            if let Ok(Some(woken)) = crate::suspend::wake_if_due(store, run.clone()).await {
                crate::suspend::start_woken(layout, &woken);
                return Ok(woken);
            }
            return Ok(run);
        }
        if run.status() == Status::Review {
            // Daemonless too: a review whose deadline passed is ended by
            // whoever looks (a failed look leaves it for the next).
            if let Ok(Some(ended)) = crate::review::expire_if_due(store, &run).await {
                return Ok(ended);
            }
            return Ok(run);
        }
        let Some(helper) = run.state.helper() else {
            // Queued or terminal: nobody to have died, unless a helper
            // waiting out a retry backoff, or for a slot of its
            // concurrency key, did.
            crate::recover::revive_overdue(layout, &run);
            crate::helper::slot::revive_dead_waiter(layout, &run);
            return Ok(run);
        };
        if os::is_alive(helper) {
            return Ok(run);
        }
        // Killing is for the run as stored now: another reader may have
        // recovered it already (a new helper, whose tree must live).
        let stored = store.get_run(&run.id).await?;
        if stored.version != run.version {
            run = stored;
            continue;
        }
        // The helper is gone; nobody else will kill its agent's tree, and
        // it dies before anything of the run is reclaimed: the agent's
        // group, a container (which outlives its killed client: removed by
        // its runtime), the run's containment group (what left the agent's
        // group), its RESOURCES groups.
        if let Some(agent) = run.state.agent() {
            os::signal_group(agent.pid, Signal::SIGKILL);
        }
        crate::container::remove_for_run(layout, &run.id).await;
        crate::contain::kill_leftovers(layout, &run.id);
        crate::limits::remove_leftover_groups(&run.id);
        // An overlay workspace outlives it too: unmounted (its files stay
        // for a recovered attempt, which mounts it again).
        crate::workspace::unmount(layout, &run.id);
        if let Some(requeued) = crate::recover::try_recover(store, layout, &run, helper.pid).await?
        {
            return Ok(requeued);
        }
        let write = dead_helper_write(layout, &run, helper.pid);
        match store.transition(&run.id, run.version, &write).await {
            Ok(updated) => {
                let keep = store
                    .run_extras(&updated.id)
                    .await
                    .is_ok_and(|e| e.keep_workspace);
                if updated.state.is_terminal() && !keep {
                    // Ended: the workspace goes (see `crate::workspace`).
                    crate::workspace::release(layout, &updated.id);
                }
                if updated.state.is_terminal() {
                    // A native agent's model call that died with the helper
                    // is billed (its events say so).
                    crate::helper::native_billing::bill_lost_calls(store, &updated.id, &[], &[])
                        .await;
                }
                crate::approvals::expire_pending(
                    store,
                    &updated.id,
                    "the run ended before a decision",
                )
                .await;
                if updated.operation == dispatch_core::Operation::Service {
                    crate::service::stop::cancel_orphans(store, &updated).await;
                } else {
                    crate::helper::retry::dead_letter(store, &updated, None).await;
                }
                return Ok(updated);
            }
            Err(StoreError::Conflict { .. }) => run = store.get_run(&run.id).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(run)
}

fn dead_helper_write(layout: &Layout, run: &Run, helper_pid: u32) -> StateWrite {
    let at = now_ms();
    if let Some(snap) = snapshot::read(layout, &run.id) {
        let event = state_event(
            run,
            &snap.state,
            Some("applied the terminal snapshot the helper wrote before it died"),
        );
        return StateWrite {
            output: snap.output,
            ..StateWrite::new(snap.state, event)
        };
    }
    let transition = if run.stop_requested_at.is_some() {
        Transition::Cancel {
            reason: format!("stopped by user; helper process {helper_pid} exited before recording"),
            exit_code: None,
            at,
        }
    } else {
        Transition::Lost {
            reason: format!(
                "helper process {helper_pid} died without recording a result (killed, or the machine restarted)"
            ),
            at,
        }
    };
    let state = run
        .state
        .apply(run.operation, &transition)
        .unwrap_or_else(|_| run.state.clone());
    let event = state_event(run, &state, None);
    StateWrite::new(state, event)
}

/// Reconciles every live run in `runs` in place, then removes stale
/// overlay workspaces (see [`sweep_stale_mounts`]).
pub async fn reconcile_all<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    runs: &mut [Run],
) -> StoreResult<()> {
    for run in runs.iter_mut() {
        if matches!(
            run.status(),
            Status::Created
                | Status::Review
                | Status::Queued
                | Status::Starting
                | Status::Running
                | Status::Paused
        ) {
            *run = reconcile(store, layout, run.clone()).await?;
        }
    }
    sweep_stale_mounts(store, layout).await;
    Ok(())
}

/// Overlay workspaces still mounted for runs that ended (a helper killed
/// between its last write and its cleanup): whatever their processes left
/// is killed, then the workspace is released (unmounted and removed),
/// unless the run asked to keep it. A run this store does not know is left
/// alone (a worker may share the root). Returns how many were released.
pub async fn sweep_stale_mounts<S: Store + ?Sized>(store: &S, layout: &Layout) -> usize {
    let mut released = 0;
    for id in crate::workspace::mounted(layout) {
        let stale = match store.get_run(&id).await {
            Ok(run) if run.state.is_terminal() => {
                !store.run_extras(&id).await.is_ok_and(|e| e.keep_workspace)
            }
            _ => false,
        };
        if stale {
            crate::contain::remove_recorded(layout, &id);
            crate::workspace::release(layout, &id);
            released += 1;
        }
    }
    released
}
