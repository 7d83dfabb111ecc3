//! Applying a transition to a stored run: the pure state machine decides,
//! the store saves with a compare-and-set and the `state` event in one transaction.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunState, Transition, TransitionError, now_ms};
use dispatch_store::{Run, StateWrite, Store, StoreError};
use serde_json::{Value, json};

/// The `state` event recorded with a move from `run`'s state to `next`.
pub(crate) fn state_event(run: &Run, next: &RunState, note: Option<&str>) -> NewEvent {
    event_between(&run.state, run.attempt, next, note)
}

/// The `state` event of attempt `attempt` moving from `from` to `next`.
fn event_between(from: &RunState, attempt: u32, next: &RunState, note: Option<&str>) -> NewEvent {
    let mut data = json!({"from": from.status(), "to": next.status()});
    if let Some(reason) = next.reason() {
        data["reason"] = json!(reason);
    }
    if let Some(code) = next.exit_code() {
        data["exit_code"] = json!(code);
    }
    if let Some(note) = note {
        data["note"] = json!(note);
    }
    NewEvent::new(EventKind::State, attempt, now_ms(), data)
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
    advance_all(store, run, std::slice::from_ref(t), &[], output).await
}

/// Applies `steps` to `run` one after the other and saves them at once (each
/// with its `state` event; `then` right after the first's, `output` with the
/// last); on a compare-and-set conflict, reloads and decides again. Updates
/// `run` in place. `then` is what a quick agent wrote before it exited,
/// saved with its start: when the steps cannot apply (someone else ended the
/// run), it is appended on its own all the same.
pub(crate) async fn advance_all<S: Store + ?Sized>(
    store: &S,
    run: &mut Run,
    steps: &[Transition],
    then: &[NewEvent],
    output: Option<Value>,
) -> Result<(), AdvanceError> {
    let result = advance_steps(store, run, steps, then, output).await;
    if let Err(AdvanceError::Illegal(_)) = &result {
        append_events(store, &run.id, then).await;
    }
    result
}

/// Appends what an agent wrote; a store that refuses is said on stderr (the
/// run goes on).
pub(crate) async fn append_events<S: Store + ?Sized>(
    store: &S,
    run: &dispatch_core::RunId,
    events: &[NewEvent],
) {
    if !events.is_empty()
        && let Err(e) = store.append_events(run, events).await
    {
        crate::say_warn!("[dispatch] could not record {} event(s): {e}", events.len());
    }
}

/// The writes that save `steps` applied to `run` one after the other (the
/// pure part of [`advance_all`]): each with its `state` event, `then` right
/// after the first's, `output` with the last.
pub(crate) fn writes_for(
    run: &Run,
    steps: &[Transition],
    then: &[NewEvent],
    output: Option<Value>,
) -> Result<Vec<StateWrite>, TransitionError> {
    let mut state = run.state.clone();
    let mut writes = Vec::with_capacity(steps.len());
    for t in steps {
        let next = state.apply(run.operation, t)?;
        let mut event = event_between(&state, run.attempt, &next, None);
        if let Transition::AgentStarted { at, .. } = t {
            // Saved late when the agent was quick (saved with its end):
            // dated when the agent started all the same.
            event.at = *at;
        }
        let then = match writes.is_empty() {
            true => then.to_vec(),
            false => Vec::new(),
        };
        writes.push(StateWrite {
            event,
            state: next.clone(),
            output: None,
            then,
        });
        state = next;
    }
    if let Some(last) = writes.last_mut() {
        last.output = output;
    }
    Ok(writes)
}

async fn advance_steps<S: Store + ?Sized>(
    store: &S,
    run: &mut Run,
    steps: &[Transition],
    then: &[NewEvent],
    output: Option<Value>,
) -> Result<(), AdvanceError> {
    loop {
        let writes = writes_for(run, steps, then, output.clone())?;
        match store.transitions(&run.id, run.version, &writes).await {
            Ok(updated) => {
                *run = updated;
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => *run = store.get_run(&run.id).await?,
            Err(e) => return Err(e.into()),
        }
    }
}
