//! Each `dispatch server` fires the timers of the cluster's services: it
//! lists the running named services, sleeps until the earliest due time (or
//! at most [`REFRESH`], or until a service is registered on this server),
//! and fires what is due with [`Services::change`]. Every server sleeps
//! towards the same due times; the compare-and-set lets exactly one of them
//! fire each one, and the others find it fired when they look again.
//!
//! As locally: a due timer fires once and its next fire is the first one
//! after now, so missed fires never stampede; a fire that was due more than
//! [`MISSED_AFTER_MS`] ago (no server was up to fire it) wakes the service
//! once with reason `recovery`, naming the missed schedules.

use std::future::Future;
use std::time::Duration;

use dispatch_core::{Ts, now_ms};
use dispatch_runtime::service::ServiceDoc;
use dispatch_runtime::service::schedule::Timers;
use dispatch_store::ServiceState;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{Services, WakeError, WakeSpec};

/// How often the list of services is read again (a service registered on
/// another server is seen within this).
pub const REFRESH: Duration = Duration::from_secs(1);
/// A fire later than this was missed (no server was up): `recovery`.
pub const MISSED_AFTER_MS: i64 = 5_000;

/// Fires due timers until `shutdown` completes. `registered` is told when
/// this server registers a service.
pub async fn keep(services: Services, registered: &Notify, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let next = match services.store.named_services().await {
            Ok(list) => fire_due(&services, list).await,
            Err(e) => {
                tracing::warn!("[dispatch] could not list the cluster's services: {e}");
                None
            }
        };
        let now = now_ms();
        let wait = next.map_or(REFRESH, |at| {
            Duration::from_millis((at - now).max(0) as u64).min(REFRESH)
        });
        tokio::select! {
            _ = &mut shutdown => return,
            _ = registered.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Fires every listed service whose timer is due; returns the earliest
/// due time still ahead.
async fn fire_due(services: &Services, list: Vec<ServiceState>) -> Option<Ts> {
    let mut earliest: Option<Ts> = None;
    for state in list {
        let Some(due) = next_due(&state) else {
            continue;
        };
        if due > now_ms() {
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
            continue;
        }
        match services.change(&state.run_id, fire).await {
            // Dropped by the overlap policy: counted as skipped.
            Ok(_) | Err(WakeError::Busy(_)) => {}
            Err(e) => tracing::warn!("[dispatch] service {}: {e}", state.run_id),
        }
        if let Ok(Some(again)) = services.store.get_service_state(&state.run_id).await
            && let Some(due) = next_due(&again)
        {
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
        }
    }
    earliest
}

fn next_due(state: &ServiceState) -> Option<Ts> {
    let doc = ServiceDoc::decode(state).ok()?;
    Timers::new(doc.schedules).ok()?.next_deadline()
}

/// The wakes of the timers due at `now` (moving each past now): one per
/// timer fired on time, and one `recovery` wake for all that were missed.
pub fn fire(doc: &mut ServiceDoc, now: Ts) -> Vec<WakeSpec> {
    let Ok(mut timers) = Timers::new(doc.schedules.clone()) else {
        return Vec::new();
    };
    let fires = timers.due(now);
    doc.schedules = timers.states();
    let mut specs = Vec::new();
    let mut missed: Vec<Value> = Vec::new();
    let mut payload = Value::Null;
    for fire in fires {
        if now - fire.scheduled_for > MISSED_AFTER_MS {
            missed.push(json!({"schedule": fire.label, "missed_since": fire.scheduled_for}));
            payload = fire.payload;
            continue;
        }
        let reason = if fire.label.starts_with("every ") {
            "interval"
        } else {
            "schedule"
        };
        specs.push(WakeSpec {
            session: None,
            reason,
            detail: json!({"schedule": fire.label, "scheduled_for": fire.scheduled_for}),
            payload: fire.payload,
            request: None,
        });
    }
    if !missed.is_empty() {
        specs.push(WakeSpec {
            session: None,
            reason: "recovery",
            detail: json!({"missed": missed}),
            payload,
            request: None,
        });
    }
    specs
}
