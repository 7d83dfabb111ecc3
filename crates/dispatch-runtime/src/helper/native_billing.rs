//! Model calls that were sent and never recorded are billed (see
//! `dispatch_agent::billing`): the one in flight when the run is stopped
//! or times out, by the attempt that stopped it; those of an attempt that
//! died (its helper killed, its worker lost), by the next attempt before it
//! sends anything, or, when the run ends there, by the reconciliation that
//! ends it. Each is a `model_call` with estimated tokens, marked
//! `estimated`, and its `usage`, so budgets count it.

use dispatch_agent::ResolvedModel;
use dispatch_core::EventKind;
use dispatch_core::event::Usage;
use dispatch_core::{NewEvent, RunId, now_ms};
use dispatch_store::Store;

use super::agent::mask_value;

/// Bills the calls run `id` sent and never recorded, each under the
/// attempt that sent it (by the next attempt before it calls anything, or
/// by whoever finds the run's helper dead and ends the run). Returns what
/// they add to the run's usage, and a line for the log about each.
pub(crate) async fn bill_lost_calls<S: Store + ?Sized>(
    store: &S,
    id: &RunId,
    models: &[ResolvedModel],
    secrets: &[String],
) -> (Usage, Vec<String>) {
    let events = super::retry::all_events(store, id).await;
    let lost = dispatch_agent::billing::unbilled(
        events
            .iter()
            .map(|e| (e.event.kind.as_str(), e.event.attempt, &e.event.data)),
    );
    let mut added = Usage::default();
    let mut lines = Vec::new();
    for (attempt, sent) in lost {
        let bill = dispatch_agent::billing::unfinished(
            &sent,
            0,
            "lost",
            "the attempt ended before the answer was recorded; billed its estimated prompt",
            models,
        );
        let at = now_ms();
        let batch: Vec<NewEvent> = bill
            .into_iter()
            .map(|e| {
                let (kind, data) = e.into_parts();
                NewEvent::new(kind, attempt, at, mask_value(data, secrets))
            })
            .collect();
        let Some(u) = batch.iter().find_map(NewEvent::usage) else {
            continue;
        };
        match store.append_events(id, &batch).await {
            Ok(()) => {
                lines.push(format!(
                    "model call {} of attempt {attempt} was sent and never recorded: billed {} estimated tokens",
                    sent["call"],
                    u.total_tokens()
                ));
                added.add(u);
            }
            Err(e) => lines.push(format!("could not bill a lost model call: {e}")),
        }
    }
    (added, lines)
}

/// Whether run `id` has the `model_call` of the call sent as `sent_id`
/// (a stop may land while that record is being written).
pub(super) async fn recorded<S: Store + ?Sized>(store: &S, id: &RunId, sent_id: &str) -> bool {
    super::retry::all_events(store, id)
        .await
        .iter()
        .any(|e| e.event.is(EventKind::ModelCall) && e.event.data["id"] == sent_id)
}
