//! Fan-in: a member declared `JOIN` runs once per wave with the messages
//! of all its upstream members, not once per message.
//!
//! A message to a JOIN member is recorded held (no child run of its own).
//! The member's wave is complete when no member upstream of it (one that
//! can reach it along ROUTE edges, [`Workflow::upstream_of`]) is running or
//! about to run, nor holds messages of its own: no further message can be
//! on its way. The coordinator then records one message from [`JOIN`] that
//! carries the held ones, keyed by sender (the latest of each), and
//! delivers it as any other. It consumes every held message recorded
//! before it, so the store alone says which messages are still held, and
//! its id is derived from the first of them: a coordinator that resumes
//! records it once. This is LangGraph's barrier (a node with several
//! incoming edges declared as one join runs once all of them have fired),
//! with the wave set by what is still running rather than by a fixed list,
//! so a loop back through one upstream member runs the join again with
//! that member's message alone.

use std::collections::{BTreeSet, HashMap};

use dispatch_core::RunId;
use dispatch_core::workflow::Workflow;
use dispatch_store::{Message, NewMessage, Run};
use serde_json::{Map, Value};

use super::turns;

/// The sender of a JOIN member's combined message.
pub const JOIN: &str = "__join__";

/// Whether `m` is held for a JOIN member (waits for its wave).
pub(super) fn held(wf: &Workflow, m: &NewMessage) -> bool {
    m.sender != JOIN && wf.is_join(&m.receiver)
}

/// The combined messages of every JOIN member whose wave is complete.
pub(super) fn ready(
    wf: &Workflow,
    msgs: &[Message],
    children: &HashMap<RunId, Run>,
    parent: &RunId,
) -> Vec<NewMessage> {
    let agent_of: HashMap<&RunId, &str> = msgs
        .iter()
        .filter_map(|m| Some((m.message.child_run.as_ref()?, m.message.receiver.as_str())))
        .collect();
    let busy: BTreeSet<&str> = children
        .values()
        .filter(|c| !c.state.is_terminal())
        .filter_map(|c| agent_of.get(&c.id).copied())
        .chain(msgs.iter().filter_map(|m| {
            let c = m.message.child_run.as_ref()?;
            (!children.contains_key(c)).then_some(m.message.receiver.as_str())
        }))
        .collect();
    let mut out = Vec::new();
    for j in &wf.joins {
        let held = held_for(msgs, j);
        let Some(first) = held.first() else { continue };
        let up = wf.upstream_of(j);
        let waiting = up
            .iter()
            .any(|u| busy.contains(u.as_str()) || (wf.is_join(u) && !held_for(msgs, u).is_empty()));
        if waiting {
            continue;
        }
        let mut payload = Map::new();
        for m in &held {
            payload.insert(m.message.sender.clone(), m.message.payload.clone());
        }
        let kinds: BTreeSet<&str> = held.iter().map(|m| m.message.kind.as_str()).collect();
        let kind = match kinds.iter().next() {
            Some(k) if kinds.len() == 1 => *k,
            _ => "RESULT",
        };
        let id = format!("{parent}.join.{j}.{}", first.seq);
        out.push(turns::message(
            id,
            JOIN,
            None,
            j,
            kind,
            Value::Object(payload),
        ));
    }
    out
}

/// The messages held for JOIN member `j`: those to it, with no child run,
/// after its last combined message.
fn held_for<'a>(msgs: &'a [Message], j: &str) -> Vec<&'a Message> {
    let last = msgs
        .iter()
        .filter(|m| m.message.receiver == j && m.message.sender == JOIN)
        .map(|m| m.seq)
        .max()
        .unwrap_or(0);
    msgs.iter()
        .filter(|m| {
            m.message.receiver == j
                && m.message.sender != JOIN
                && m.message.child_run.is_none()
                && m.seq > last
        })
        .collect()
}
