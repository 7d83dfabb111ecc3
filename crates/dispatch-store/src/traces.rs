//! What a finished run's trace is built from, read for a batch of runs at
//! once (one statement per table on PostgreSQL), so an exporter keeps up
//! with thousands of runs a second.

use async_trait::async_trait;
use dispatch_core::{EventKind, RunId, RunState, Status, Ts};

use crate::{Attempt, Event, Run, StoreResult};

/// The event types a trace has spans for; the others are left unread.
pub const TRACE_EVENT_KINDS: [&str; 3] = [
    EventKind::Step.as_str(),
    EventKind::ModelCall.as_str(),
    EventKind::ToolCall.as_str(),
];

/// One finished run with its attempts, its [`TRACE_EVENT_KINDS`] events
/// (oldest first) and the `traceparent` it was created under.
#[derive(Clone, Debug)]
pub struct RunTrace {
    pub run: Run,
    pub attempts: Vec<Attempt>,
    pub events: Vec<Event>,
    pub traceparent: Option<String>,
}

impl RunTrace {
    /// What [`crate::NoopStore::succeed_at_once`] saved for `run` (as it
    /// was claimed, `starting`) when it reported it finished at `at`: built
    /// from what the caller holds, with no read.
    pub fn succeeded_at_once(mut run: Run, traceparent: Option<String>, at: Ts) -> RunTrace {
        run.state = RunState::Succeeded {
            started_at: Some(at),
            ended_at: at,
            exit_code: 0,
        };
        run.version += 2;
        run.updated_at = at;
        let attempt = Attempt {
            number: run.attempt,
            started_at: at,
            ended_at: Some(at),
            status: Some(Status::Succeeded),
            exit_code: Some(0),
            error: None,
            worker: None,
        };
        RunTrace {
            run,
            attempts: vec![attempt],
            events: Vec::new(),
            traceparent,
        }
    }
}

/// Batch reads for tracing.
#[async_trait]
pub trait TraceStore: Send + Sync {
    /// The runs of `ids` that are in a terminal state, each with what its
    /// trace is built from, in no particular order. Runs not found (deleted
    /// meanwhile) or not finished are left out.
    async fn finished_traces(&self, ids: &[RunId]) -> StoreResult<Vec<RunTrace>>;
}
