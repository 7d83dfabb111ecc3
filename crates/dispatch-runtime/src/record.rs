//! Applying a transition to a stored run: the pure state machine decides,
//! the store saves with a compare-and-set and the `state` event in one transaction.

use dispatch_core::{NewEvent, RunState, Transition, TransitionError, now_ms};
use dispatch_store::{Run, StateWrite, Store, StoreError};
use serde_json::{Value, json};

/// The `state` event recorded with a move from `run`'s state to `next`.
pub(crate) fn state_event(run: &Run, next: &RunState, note: Option<&str>) -> NewEvent {
    let mut data = json!({"from": run.status(), "to": next.status()});
    if let Some(reason) = next.reason() {
        data["reason"] = json!(reason);
    }
    if let Some(code) = next.exit_code() {
        data["exit_code"] = json!(code);
    }
    if let Some(note) = note {
        data["note"] = json!(note);
    }
    NewEvent::new("state", run.attempt, now_ms(), data)
}

/// Why [`advance`] did not move the run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdvanceError {
    #[error(transparent)]
    Illegal(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `t` to `run` and saves it; on a compare-and-set conflict, reloads
/// and decides again. Updates `run` in place.
pub(crate) async fn advance<S: Store + ?Sized>(
    store: &S,
    run: &mut Run,
    t: &Transition,
    output: Option<Value>,
) -> Result<(), AdvanceError> {
    loop {
        let next = run.state.apply(run.operation, t)?;
        let write = StateWrite {
            event: state_event(run, &next, None),
            state: next,
            output: output.clone(),
        };
        match store.transition(&run.id, run.version, &write).await {
            Ok(updated) => {
                *run = updated;
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => *run = store.get_run(&run.id).await?,
            Err(e) => return Err(e.into()),
        }
    }
}
