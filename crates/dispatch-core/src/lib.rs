//! The Dispatch run model. Pure data and pure functions: no async runtime, no I/O
//! except where a module says so (parcel building reads and writes files).

pub mod agent;
pub mod agentfile;
pub mod brief;
pub mod checkpoint;
pub mod component;
pub mod concurrency;
pub mod cron;
pub mod environment;
pub mod event;
pub mod id;
pub mod isolation;
pub mod parcel;
pub mod parcel_meta;
pub mod parcel_skill;
mod parcel_tools;
pub mod policy;
pub mod project;
pub mod quota;
pub mod redact;
pub mod run_event;
pub mod state;
pub mod time;
pub mod tool;
pub mod trace;
pub mod trigger;
pub mod units;
pub mod workflow;
pub use parcel_tools::check_schema;

pub use event::{AgentEvent, NewEvent};
pub use id::RunId;
pub use run_event::{EventKind, RunEvent};
pub use state::{Operation, ProcRef, RunState, Status, Transition, TransitionError, Wait, WaitFor};
pub use time::{Ts, now_ms};
pub use trigger::Trigger;
pub(crate) mod parcel_archive;
pub(crate) mod parcel_build;
pub(crate) mod parcel_members;
pub mod parcel_seal;

/// An error and each of its causes on one line, `what: why: root cause`
/// (a cause whose text the line already holds is not repeated): for a
/// refusal, a log line or an outbox's last error.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
