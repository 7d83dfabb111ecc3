//! The attempts of one run: carry each through its courier (see
//! [`crate::courier`]), and either finish the run or requeue it for another
//! try after a backoff. A helper process owns every attempt of its run; a
//! worker only the one it claimed (the next is any worker's).

use std::sync::Arc;

use dispatch_core::now_ms;
use dispatch_store::{Run, Store};

use super::retry;
use super::{Host, Known, LifecycleLog, finish, load_parcel};
use crate::courier::{Context, End, one_attempt};
use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::record::{AdvanceError, advance_all};

/// Runs attempts of the claimed run until one ends it. Returns its exit status.
///
/// What is awaited between attempts (claiming the slot again, a suspend,
/// the end) is boxed: awaited inline, its state would be laid out in this
/// function's, and held by every run for as long as its attempt runs (the
/// slot's claim alone is ~11 KB, more than the rest of this state; issue #38).
pub(super) async fn run_attempts<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: Box<Run>,
    log: &mut LifecycleLog,
    host: Host,
    known: Box<Known>,
) -> RuntimeResult<i32> {
    // Passed boxed and unboxed once here: a `Run` moved by value down the
    // layers of futures would be laid out in each of them, twice (issue #38);
    // so would `known`, whose fields are taken below.
    let mut run = *run;
    // Loaded once for every attempt of the run.
    let parcel = match known.parcel {
        Some(p) => Ok(p),
        None => load_parcel(layout, &run).map(Arc::new),
    };
    let extras = match known.extras {
        Some(extras) => Some(extras),
        None => store.run_extras(&run.id).await.ok(),
    };
    let policy = retry::policy_of(extras.as_ref(), parcel.as_ref().ok().map(|p| &p.manifest));
    // Handoffs start their runs here, unless the host has its own way.
    let local = crate::handoff::LocalUpstream::new(store, layout);
    let upstream: &dyn crate::handoff::Upstream = match &known.upstream {
        Some(u) => u.as_ref(),
        None => &local,
    };
    let keep_workspace = extras.as_ref().is_some_and(|e| e.keep_workspace);
    // The agent's TRACEPARENT: the run's span, in its caller's trace if any.
    let traceparent = dispatch_core::trace::run_context(
        &run.id,
        extras.as_ref().and_then(|e| e.traceparent.as_deref()),
    )
    .to_string();
    let session = extras.and_then(|e| e.session);
    let briefs = known.briefs.clone();
    let here = known.here.clone();
    let shared = known.shared;
    let turn = known.turn;
    loop {
        let max = policy.max_attempts();
        match run.attempt {
            1 => log.line(&format!("attempt 1 of {max}")),
            n => {
                // Woken from a durable wait or recovered: not every attempt counts.
                let counted = n.saturating_sub(retry::lost_recoveries(store, &run.id).await);
                log.line(&match counted == n {
                    true => format!("attempt {n} of {max}"),
                    false => format!("attempt {n} (counts as {counted} of {max})"),
                });
            }
        }
        let ctx = Context {
            policy: &policy,
            session: session.as_deref(),
            own_signals: host.own_signals,
            parcel: parcel.as_deref(),
            upstream,
            leased: host.leased,
            briefs: briefs.as_deref(),
            here: here.as_deref(),
            traceparent: &traceparent,
            shared: shared.as_ref(),
            turn: turn.as_deref(),
        };
        let mut ended = one_attempt(store, layout, &mut run, log, &ctx).await?;
        // Whatever the attempt ends with is stored and printed: no secret in it.
        ended.end = ended.end.masked(log.secrets());
        if let Some(objects) = &shared {
            // A large output goes to the artifact store; the run keeps a reference.
            if let End::Final(_, output) | End::Retryable(_, _, output) = &mut ended.end {
                Box::pin(super::shared::spill_output(
                    store, objects, layout, &run.id, output, log,
                ))
                .await;
            }
        }
        let checkpoint = ended.checkpoint;
        let (mut steps, then) = match ended.start {
            Some(u) => (vec![u.start], u.events),
            None => (Vec::new(), Vec::new()),
        };
        let (t, failure, output) = match ended.end {
            End::Final(t, output) => (t, None, output),
            End::Retryable(t, failure, output) => (t, Some(failure), output),
            End::Suspend(wait) => {
                let woke = Box::pin(crate::suspend::suspend(
                    store, &mut run, &wait, &steps, &then,
                ))
                .await?;
                log.line(&match (&run.state, woke) {
                    (_, true) => "what the run waits for is here already; next attempt".into(),
                    (state, false) => format!("suspended: {}", state.reason().unwrap_or("")),
                });
                if !woke || host.leased {
                    // No process stays behind; the wake queues the next attempt.
                    leave_workspace(layout, &run, host, keep_workspace);
                    return Ok(crate::run_exit_code(&run.state));
                }
                match Box::pin(super::slot::claim(store, layout, run.clone())).await? {
                    Ok(super::slot::Claim::Held(held)) => {
                        run = held;
                        continue;
                    }
                    Ok(super::slot::Claim::Ended(ended)) => {
                        return Ok(crate::run_exit_code(&ended.state));
                    }
                    Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
                    Err(AdvanceError::Store(e)) => return Err(e.into()),
                }
            }
        };
        // Attempts used so far, not counting lost-helper recoveries (read
        // only when another attempt is possible: it scans the event log).
        let used = match failure {
            Some(_) => run
                .attempt
                .saturating_sub(retry::lost_recoveries(store, &run.id).await),
            None => run.attempt,
        };
        let stop_requested = failure.is_some()
            && store
                .get_run(&run.id)
                .await
                .map(|r| r.stop_requested_at.is_some())
                .unwrap_or(false);
        let Some(failure) = failure.filter(|_| used < max && !stop_requested) else {
            steps.push(t);
            let code = Box::pin(finish(
                store, layout, &mut run, log, host, &steps, &then, output,
            ))
            .await?;
            if let Some(turn) = &turn {
                turn.ended();
            }
            if let Some(parent) = &run.parent_id {
                crate::workflow::member_ended(parent);
            }
            retry::dead_letter(store, &run, checkpoint).await;
            if !keep_workspace {
                // Ended: the workspace goes (see `crate::workspace`), off this
                // thread: an unmount can take a while, and the coordinator
                // just woken may be waiting for the thread.
                let (layout, id) = (layout.clone(), run.id.clone());
                let gone = move || crate::workspace::release(&layout, &id);
                let _ = tokio::task::spawn_blocking(gone).await;
            }
            return Ok(code);
        };
        // Another attempt follows: the start of this one is saved first.
        if !steps.is_empty() {
            match Box::pin(advance_all(store, &mut run, &steps, &then, None)).await {
                Ok(()) => {}
                Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
                Err(AdvanceError::Store(e)) => return Err(e.into()),
            }
        }
        let wait = policy.backoff_ms(used, fastrand::f64());
        log.line(&retry::retry_line(&failure, run.attempt, used, max, wait));
        if !Box::pin(retry::requeue(
            store,
            &mut run,
            &failure,
            now_ms() + wait as i64,
            false,
        ))
        .await?
        {
            return Ok(crate::run_exit_code(&store.get_run(&run.id).await?.state));
        }
        if host.leased {
            // Queued under no lease: the next attempt is any worker's.
            leave_workspace(layout, &run, host, keep_workspace);
            return Ok(crate::run_exit_code(&run.state));
        }
        let Some(due) = retry::wait_until_due(store, &run.id).await? else {
            return Ok(crate::run_exit_code(&store.get_run(&run.id).await?.state));
        };
        run = due;
        match Box::pin(super::slot::claim(store, layout, run.clone())).await? {
            Ok(super::slot::Claim::Held(held)) => run = held,
            Ok(super::slot::Claim::Ended(ended)) => return Ok(crate::run_exit_code(&ended.state)),
            Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
            Err(AdvanceError::Store(e)) => return Err(e.into()),
        }
    }
}

/// The run leaves this process unfinished (a retry or a wake comes later):
/// a worker removes its workspace, since the queue may give the next attempt
/// to any worker (which starts from a fresh copy); a local helper's next
/// attempt, on this machine, finds it as it was.
fn leave_workspace(layout: &Layout, run: &Run, host: Host, keep: bool) {
    if host.leased && !keep {
        crate::workspace::release(layout, &run.id);
    }
}
