//! The shapes of the parts of a run that answers list beside it: a
//! workflow member's child runs, the text a native agent streams. Like
//! [`crate::answers`], every type a handler answers keeps its fields in
//! name order, the order these answers have always had on the wire.

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
