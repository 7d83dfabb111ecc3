//! A run created already held by its helper (see [`crate::NewRun::claimed_by`]):
//! the claim both backends save right after the `created` event, in the
//! same transaction.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, ProcRef, RunState, Status, Transition};
use serde_json::json;

use crate::{NewRun, StateWrite};

/// The claim of the new run `new` by `helper`, at its creation time.
pub(crate) fn claim_write(new: &NewRun, helper: ProcRef) -> StateWrite {
    let at = new.created_at;
    let state = RunState::queued()
        .apply(new.operation, &Transition::Claim { helper, at })
        .unwrap_or(RunState::Starting { helper, since: at });
    let data = json!({"from": Status::Queued, "to": state.status(), "helper": helper.pid});
    StateWrite::new(state, NewEvent::new(EventKind::State, 1, at, data))
}
