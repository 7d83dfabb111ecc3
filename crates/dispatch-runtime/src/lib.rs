//! The local, daemonless runtime.
//!
//! The foreground CLI [`launch`]es a run: it resolves or builds the parcel,
//! writes the brief, creates the run record and spawns a detached helper
//! (`dispatch internal run-record <id>`) in its own session. The [`helper`]
//! runs the agent in its own process group, streams its output into the log
//! and its events into the store, collects artifacts and output, writes the
//! terminal snapshot and then the terminal state. Readers [`reconcile`] runs
//! whose helper died; [`stop`] signals process groups, never lone pids.

pub mod approvals;
pub mod call_records;
pub mod concurrency;
pub mod contain;
pub mod container;
pub mod courier;
mod egress;
mod error;
mod follow;
pub mod group;
pub mod handoff;
pub mod helper;
pub mod launch;
pub mod layout;
pub mod limits;
pub mod native;
pub mod objects;
pub mod os;
pub mod policy_gate;
pub mod probe;
pub mod prune;
pub mod reconcile;
mod record;
mod recover;
pub mod remove;
pub mod report;
pub mod retention;
pub mod review;
pub mod sandbox;
pub mod say;
pub mod service;
pub mod snapshot;
pub mod stop;
pub mod submit;
pub mod suspend;
pub(crate) mod wasm;
/// Pruning the compiled WASM components no parcel needs (`dispatch rmi`).
pub use wasm::prune::{Pruned, prune_cache as prune_wasm_cache};
pub mod waiting;
pub mod workflow;
pub mod workspace;

pub use error::{RuntimeError, RuntimeResult};
pub use layout::Layout;

/// The exit status a finished run stands for: its exit code, or 1 when it
/// ended without one (lost helper, brief error, cancelled before start).
pub fn run_exit_code(state: &dispatch_core::RunState) -> i32 {
    match state {
        dispatch_core::RunState::Succeeded { .. } => 0,
        other => other.exit_code().unwrap_or(1),
    }
}
