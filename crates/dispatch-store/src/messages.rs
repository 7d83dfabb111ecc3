//! Workflow messages: what the members of a workflow run send each other.
//! Each is stored once under its id (a second put of the same id changes
//! nothing), in the order the coordinator recorded them, with the id of the
//! child run that delivers it to its receiver chosen when it is recorded —
//! so creating that run is what delivers it, and the run's primary key makes
//! the delivery happen once.

use async_trait::async_trait;
use dispatch_core::EventKind;
use dispatch_core::{RunId, Ts};
use serde::{Deserialize, Serialize};

use crate::StoreResult;

/// A message to record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Unique; the same id always names the same message.
    pub id: String,
    /// The sender (a member's name, or `__start__` for the workflow's input).
    pub sender: String,
    /// The child run that sent it.
    pub sender_run: Option<RunId>,
    /// A member's name, or `__end__`.
    pub receiver: String,
    /// TASK, RESULT, VALIDATION, ERROR or CONTROL.
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: Ts,
    /// The child run that delivers it (none for `__end__`).
    pub child_run: Option<RunId>,
}

/// A recorded message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Its place in the workflow's messages (increasing).
    pub seq: i64,
    /// The workflow's (parent) run.
    pub workflow: RunId,
    #[serde(flatten)]
    pub message: NewMessage,
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Records `messages` of the workflow run `workflow` in order, in one
    /// transaction, each with a `message` event in the workflow's log
    /// (attempt `attempt`). A message whose id is stored already is skipped.
    /// Returns the messages this call stored, in order (the skipped ones
    /// are not in it). `NotFound` when the workflow run does not exist.
    ///
    /// Messages are derived from what is durable (the members' events and
    /// ends) under ids that say where they came from, so a coordinator that
    /// resumes puts the same ones again: a store may commit them without
    /// waiting for its disk (PostgreSQL does, `synchronous_commit = off`),
    /// since the next durable commit — the member run a message creates,
    /// the workflow's end — makes them durable first.
    async fn put_messages(
        &self,
        workflow: &RunId,
        attempt: u32,
        messages: &[NewMessage],
    ) -> StoreResult<Vec<Message>>;

    /// The workflow's messages, in the order they were recorded.
    async fn list_messages(&self, workflow: &RunId) -> StoreResult<Vec<Message>>;
}

/// The `message` event recorded with a message in its workflow's log.
pub(crate) fn event(m: &NewMessage, attempt: u32) -> dispatch_core::NewEvent {
    dispatch_core::NewEvent::new(
        EventKind::Message,
        attempt,
        m.created_at,
        serde_json::json!({
            "id": m.id,
            "from": m.sender,
            "to": m.receiver,
            "kind": m.kind,
            "sender_run": m.sender_run,
            "child_run": m.child_run,
            "payload": m.payload,
        }),
    )
}
