//! `runs/<id>.final.json`: the terminal state a helper is about to write,
//! saved first so that a helper killed between the two writes loses nothing.
//! Readers apply it when they find the helper dead and the run not terminal.

use dispatch_core::{RunId, RunState, Ts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{RuntimeResult, io};
use crate::layout::Layout;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalSnapshot {
    pub run_id: RunId,
    pub attempt: u32,
    /// The terminal state.
    pub state: RunState,
    #[serde(default)]
    pub output: Option<Value>,
    pub written_at: Ts,
}

/// Writes the snapshot atomically (temporary file, then rename).
pub fn write(layout: &Layout, snap: &FinalSnapshot) -> RuntimeResult<()> {
    let path = layout.final_snapshot(&snap.run_id);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(snap).expect("a snapshot is plain JSON data");
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &path))
}

/// The snapshot of `id`, if one was written and it is readable and terminal.
pub fn read(layout: &Layout, id: &RunId) -> Option<FinalSnapshot> {
    let bytes = std::fs::read(layout.final_snapshot(id)).ok()?;
    let snap: FinalSnapshot = serde_json::from_slice(&bytes).ok()?;
    (snap.run_id == *id && snap.state.is_terminal()).then_some(snap)
}
