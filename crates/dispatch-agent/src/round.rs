//! One round of tool calls, and its durable suspension.
//!
//! The calls of one model answer run at once. When one of them needs a
//! decision that is not taken yet (an approval the runtime will not wait
//! for in-process), the round suspends: the calls that completed are kept
//! in the conversation ([`Conversation::done`]) with their results, their
//! `tool_call` events are recorded, and the loop ends with
//! [`LoopEnd::Suspended`](crate::LoopEnd::Suspended). The attempt that
//! resumes from that checkpoint runs only the calls not done yet: a call
//! that completed is never run twice, and the model is not called again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dispatch_core::RunEvent;
use futures_util::StreamExt;
use futures_util::future::{self, Either};
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agent_loop::{Sink, ToolOutcome, Tools};
use crate::conversation::Conversation;
use crate::provider::ToolCall;

/// A decision a tool call waits for: the run suspends until it is taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// The approval's id (as `dispatch approvals ls` shows it).
    pub id: String,
    /// What is asked (tool, arguments, risk).
    pub summary: String,
    /// When no decision denies the call (milliseconds since the epoch).
    pub deadline_ms: Option<i64>,
}

/// A call of a suspended round that completed before the suspension: its
/// result, given to the model when the round is done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DoneCall {
    /// The tool call's id (as the model gave it).
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub is_error: bool,
    /// A limit the call reached (the run ends after the round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Its `tool_call` event, not recorded yet (a call saved while others
    /// of its round ran): recorded with the round, in the model's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

/// How a round's calls went.
pub(crate) enum RoundEnd {
    /// Every call has its result, in the model's order, with the events
    /// of the calls that ran in this attempt.
    Done {
        results: Vec<DoneCall>,
        events: Vec<RunEvent>,
    },
    /// A call waits for `pending`: the completed calls' events, and the
    /// conversation to checkpoint (the round not started, its completed
    /// calls kept).
    Suspended {
        pending: PendingApproval,
        events: Vec<RunEvent>,
        state: Box<Conversation>,
    },
}

/// Runs the calls of round `round` not done yet (reusing the results of
/// those a suspended or killed attempt completed). When several run at
/// once, each one that completes while others still run is checkpointed
/// at once (its `tool_call` event and the conversation with it in
/// [`Conversation::done`], its `tool_call` event with it, recorded with
/// the round in the model's order): an attempt that dies mid-round re-runs
/// only the calls whose results were not saved.
/// The other calls go on while such a checkpoint is saved: it waits for
/// the run's row, which a call still running may hold.
pub(crate) async fn run_round(
    conv: &Conversation,
    round: u64,
    calls: &[ToolCall],
    tools: &dyn Tools,
    sink: &mut dyn Sink,
) -> RoundEnd {
    tools.begin_round(round);
    let done = |id: &str| conv.done.iter().find(|d| d.id == id);
    let mut running: FuturesUnordered<_> = calls
        .iter()
        .enumerate()
        .filter(|(_, tc)| done(&tc.id).is_none())
        .map(|(i, tc)| async move {
            let started = Instant::now();
            let outcome = tools.call(tc).await;
            (i, outcome, started.elapsed())
        })
        .collect();
    let mut outcomes: Vec<Option<(ToolOutcome, Duration)>> = vec![None; calls.len()];
    // What is saved of the round so far.
    let mut state = conv.clone();
    // Calls that completed while a checkpoint was being saved, in turn.
    let mut ready = VecDeque::new();
    loop {
        let (i, outcome, took) = match ready.pop_front() {
            Some(done) => done,
            None => match running.next().await {
                Some(done) => done,
                None => break,
            },
        };
        let others_run = !running.is_empty() || !ready.is_empty();
        if others_run && outcome.suspend.is_none() {
            let tc = &calls[i];
            let mut saved = done_call(tc, &outcome);
            saved.event = Some(tool_event(tc, &outcome, took, round));
            state.done.push(saved);
            let step = format!("round-{round}-call-{}", tc.id);
            // Not saved (the store is out): the round's record saves it.
            let save = sink.record(vec![RunEvent::Checkpoint(state.checkpoint(&step))]);
            save_while_running(save, &mut running, &mut ready).await;
        }
        outcomes[i] = Some((outcome, took));
    }
    let mut events = Vec::new();
    let mut results = Vec::new();
    let mut pending = None;
    for (tc, ran) in calls.iter().zip(outcomes) {
        let Some((outcome, took)) = ran else {
            if let Some(d) = done(&tc.id) {
                let mut d = d.clone();
                // Saved by an attempt that died before the round's record.
                if let Some(event) = d.event.take() {
                    events.push(RunEvent::ToolCall(event));
                }
                results.push(d);
            }
            continue;
        };
        if let Some(p) = outcome.suspend {
            pending = pending.or(Some(p));
            continue;
        }
        events.push(RunEvent::ToolCall(tool_event(tc, &outcome, took, round)));
        results.push(done_call(tc, &outcome));
    }
    match pending {
        None => RoundEnd::Done { results, events },
        Some(pending) => {
            let mut state = conv.clone();
            state.done = results;
            RoundEnd::Suspended {
                pending,
                events,
                state: Box::new(state),
            }
        }
    }
}

/// Awaits `save` while the calls still `running` go on, keeping those that
/// complete meanwhile in `ready`: a save waits for the run's row, which a
/// call still running may hold (an approval's transaction), so a save that
/// stopped the other calls could wait for them forever.
async fn save_while_running<S: Future, C: Future>(
    save: S,
    running: &mut FuturesUnordered<C>,
    ready: &mut VecDeque<C::Output>,
) {
    let mut save = std::pin::pin!(save);
    loop {
        match future::select(save.as_mut(), running.next()).await {
            Either::Left(_) => return,
            Either::Right((Some(done), _)) => ready.push_back(done),
            Either::Right((None, _)) => {
                save.await;
                return;
            }
        }
    }
}

/// What the model is told of a call: the outcome's note (an approver's
/// edit), then the tool's output.
fn done_call(tc: &ToolCall, outcome: &ToolOutcome) -> DoneCall {
    let text = match &outcome.note {
        Some(note) => format!("{note}\n\n{}", outcome.text),
        None => outcome.text.clone(),
    };
    DoneCall {
        id: tc.id.clone(),
        text,
        is_error: outcome.is_error,
        stop: outcome.stop.clone(),
        event: None,
    }
}

/// The `tool_call` event of a call that gave `outcome` after `took`: its
/// `input` is the model's arguments unless the outcome's fields say
/// otherwise (an approver's edit: `input` is then what ran, beside
/// `requested_input` and `edited_by`); its `output` is the tool's own.
fn tool_event(tc: &ToolCall, outcome: &ToolOutcome, took: Duration, round: u64) -> Value {
    let input: Value =
        serde_json::from_str(&tc.arguments).unwrap_or(Value::String(tc.arguments.clone()));
    let mut event = json!({"name": tc.name, "id": tc.id, "input": input,
        "output": outcome.text, "ok": !outcome.is_error,
        "duration_ms": took.as_millis() as u64, "round": round});
    if let Some(fields) = event.as_object_mut() {
        fields.extend(outcome.meta.clone());
    }
    event
}

impl ToolOutcome {
    /// The outcome of a call that waits for `pending` (the round suspends).
    pub fn suspended(pending: PendingApproval) -> Self {
        ToolOutcome {
            suspend: Some(pending),
            ..ToolOutcome::default()
        }
    }
}

#[cfg(test)]
mod tests;
