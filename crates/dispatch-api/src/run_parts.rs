//! The shapes of the parts of a run that answers list beside it: a
//! workflow member's child runs, the events of a run's stream. Like
//! [`crate::answers`], every type a handler answers keeps its fields in
//! the order these answers have always had on the wire: name order, but
//! for a streamed event's.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::RunStatus;

/// One child run (turn) of a workflow member. (Fields in name order, as on
/// the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphRun {
    /// From its start to its end (ms); 0 until it has ended.
    pub duration_ms: i64,
    /// The child run's full id.
    pub id: String,
    pub status: RunStatus,
}

/// The `data` of a stored event in a run's event stream
/// (`GET /v1/runs/{id}/events` as `text/event-stream`): the event with its
/// `seq` and run. Its fields are in the order the stream has always
/// written them, which is not name order (`?format=json` lists the same
/// events as [`crate::Event`], in name order).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    /// Position in the store's event log; also the SSE id.
    pub seq: i64,
    pub run_id: String,
    /// `state`, `usage`, `step`, `tool_call`, …; also the SSE event name.
    #[serde(rename = "type")]
    pub kind: String,
    pub attempt: u32,
    /// Unix milliseconds.
    pub at: i64,
    pub data: serde_json::Value,
}

/// The `data` of a `delta` event in a run's event stream: text a native
/// agent generates, as it arrives (not stored, so without an SSE id).
/// (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamDelta {
    pub attempt: u32,
    pub run_id: String,
    pub text: String,
}
