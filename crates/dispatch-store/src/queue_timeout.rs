//! The end of a queued run nobody claimed before its queue timeout, as both
//! backends write it (see [`crate::QueueStore::expire_queued`]).

use dispatch_core::EventKind;
use dispatch_core::time::human_duration;
use dispatch_core::{NewEvent, Operation, RunState, Status, Transition, Ts};
use serde_json::json;

use crate::StateWrite;

/// Queued runs ended per transaction; the rest wait for the next call.
pub(crate) const EXPIRE_BATCH: i64 = 1_000;

/// The write that ends a queued run of `operation` at `now`: `timed_out`,
/// never started, with the reason and the timeout in its `state` event.
pub(crate) fn expiry_write(
    operation: Operation,
    attempt: u32,
    timeout_ms: i64,
    now: Ts,
) -> StateWrite {
    let reason = format!(
        "queue timeout: no worker claimed the run within {}",
        human_duration(timeout_ms)
    );
    let state = RunState::queued()
        .apply(
            operation,
            &Transition::TimeOut {
                reason: reason.clone(),
                exit_code: None,
                at: now,
            },
        )
        .unwrap_or(RunState::TimedOut {
            started_at: None,
            ended_at: now,
            exit_code: None,
            reason: reason.clone(),
        });
    let data = json!({
        "from": Status::Queued,
        "to": state.status(),
        "reason": reason,
        "queue_timeout_ms": timeout_ms,
    });
    StateWrite::new(state, NewEvent::new(EventKind::State, attempt, now, data))
}
