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

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agent_loop::{ToolOutcome, Tools};
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
}

/// How a round's calls went.
pub(crate) enum RoundEnd {
    /// Every call has its result, in the model's order, with the events
    /// of the calls that ran in this attempt.
    Done {
        results: Vec<DoneCall>,
        events: Vec<(&'static str, Value)>,
    },
    /// A call waits for `pending`: the completed calls' events, and the
    /// conversation to checkpoint (the round not started, its completed
    /// calls kept).
    Suspended {
        pending: PendingApproval,
        events: Vec<(&'static str, Value)>,
        state: Box<Conversation>,
    },
}

/// Runs the calls of round `round` not done yet (reusing the results of
/// those a suspended attempt completed).
pub(crate) async fn run_round(
    conv: &Conversation,
    round: u64,
    calls: &[ToolCall],
    tools: &dyn Tools,
) -> RoundEnd {
    tools.begin_round(round);
    let done = |id: &str| conv.done.iter().find(|d| d.id == id);
    let outcomes = futures_util::future::join_all(calls.iter().map(|tc| async move {
        if done(&tc.id).is_some() {
            return None;
        }
        let started = Instant::now();
        let outcome = tools.call(tc).await;
        Some((outcome, started.elapsed()))
    }))
    .await;
    let mut events = Vec::new();
    let mut results = Vec::new();
    let mut pending = None;
    for (tc, ran) in calls.iter().zip(outcomes) {
        let Some((outcome, took)) = ran else {
            if let Some(d) = done(&tc.id) {
                results.push(d.clone());
            }
            continue;
        };
        if let Some(p) = outcome.suspend {
            pending = pending.or(Some(p));
            continue;
        }
        let input: Value =
            serde_json::from_str(&tc.arguments).unwrap_or(Value::String(tc.arguments.clone()));
        let mut event = json!({"name": tc.name, "id": tc.id, "input": input,
            "output": outcome.text, "ok": !outcome.is_error,
            "duration_ms": took.as_millis() as u64, "round": round});
        if let Some(fields) = event.as_object_mut() {
            fields.extend(outcome.meta);
        }
        events.push(("tool_call", event));
        results.push(DoneCall {
            id: tc.id.clone(),
            text: outcome.text,
            is_error: outcome.is_error,
            stop: outcome.stop,
        });
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

impl ToolOutcome {
    /// The outcome of a call that waits for `pending` (the round suspends).
    pub fn suspended(pending: PendingApproval) -> Self {
        ToolOutcome {
            suspend: Some(pending),
            ..ToolOutcome::default()
        }
    }
}
