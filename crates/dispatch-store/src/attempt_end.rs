//! How an attempt ended, as both backends record it when they close one.

use dispatch_core::{NewEvent, RunState, Status, Ts};
use serde_json::Value;

/// How an attempt ended.
pub(crate) struct AttemptEnd {
    pub(crate) ended_at: Ts,
    pub(crate) status: Status,
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<String>,
}

/// A requeued attempt ended in failure (that is why it is tried again). The
/// queued state carries no detail, so the requeue event's `data.reason`,
/// `data.exit_code` and `data.attempt_status` (`failed` unless it names
/// another terminal status, e.g. `timed_out`) are used when it has them.
pub(crate) fn requeue_close(event: &NewEvent) -> AttemptEnd {
    let exit_code = event
        .data
        .get("exit_code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok());
    let error = event
        .data
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("requeued for another attempt");
    // A timed-out attempt says so in `data.attempt_status`.
    let status = event
        .data
        .get("attempt_status")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Status>().ok())
        .filter(|s| s.is_terminal())
        .unwrap_or(Status::Failed);
    AttemptEnd {
        ended_at: event.at,
        status,
        exit_code,
        error: Some(error.to_string()),
    }
}

/// An attempt that ended in a durable wait: its agent exited 0 and the run
/// is suspended; the next attempt starts when the run is woken.
pub(crate) fn suspend_close(state: &RunState, at: Ts) -> Option<AttemptEnd> {
    let RunState::Suspended { reason, .. } = state else {
        return None;
    };
    Some(AttemptEnd {
        ended_at: at,
        status: Status::Succeeded,
        exit_code: Some(0),
        error: Some(format!("suspended: {reason}")),
    })
}

/// Who runs an attempt that opens in `state`: the lease owner (a worker's
/// name), else the local helper that holds the run.
pub(crate) fn worker_name(owner: Option<&str>, state: &RunState) -> String {
    match (owner, state.helper()) {
        (Some(owner), _) => owner.to_string(),
        (None, Some(helper)) => format!("local helper {}", helper.pid),
        (None, None) => "local helper".to_string(),
    }
}

/// The end of an attempt whose worker lost the run (its lease expired, or
/// it gave the run back when it drained): failed, with the reason, and not
/// counted against the retry budget (the requeue event says `lost`).
pub(crate) fn lost_close(at: Ts, reason: &str, owner: Option<&str>) -> AttemptEnd {
    let error = match owner {
        Some(owner) => format!("{reason} (worker {owner}); does not count as an attempt"),
        None => format!("{reason}; does not count as an attempt"),
    };
    AttemptEnd {
        ended_at: at,
        status: Status::Failed,
        exit_code: None,
        error: Some(error),
    }
}
