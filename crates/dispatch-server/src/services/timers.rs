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
//!
//! The same loop expires the contexts' sessions of A2A services served
//! with `--session-ttl` (see `dispatch_runtime::service::a2a_sessions`).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use dispatch_core::{RunId, Ts, now_ms};
use dispatch_runtime::service::ServiceDoc;
use dispatch_runtime::service::schedule::Timers;
use dispatch_runtime::service::{a2a, a2a_sessions};
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
    let mut swept = HashMap::new();
    loop {
        let next = match services.store.named_services().await {
            Ok(list) => {
                expire_sessions(&services, &list, &mut swept).await;
                fire_due(&services, list).await
            }
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

/// Sweeps the sessions of the listed A2A services with a `--session-ttl`,
/// each at most once per its sweep period (`swept`: when this server last
/// did).
async fn expire_sessions(
    services: &Services,
    list: &[ServiceState],
    swept: &mut HashMap<RunId, Instant>,
) {
    swept.retain(|id, _| list.iter().any(|s| &s.run_id == id));
    for state in list {
        let Some(ttl) = ServiceDoc::decode(state)
            .ok()
            .and_then(|d| d.config.a2a)
            .and_then(|a| a.session_ttl_ms)
        else {
            continue;
        };
        if swept
            .get(&state.run_id)
            .is_some_and(|at| at.elapsed() < a2a_sessions::period(ttl))
        {
            continue;
        }
        swept.insert(state.run_id.clone(), Instant::now());
        let Ok(run) = services.store.get_run(&state.run_id).await else {
            continue;
        };
        let prefix = format!("{}/{}", run.parcel_name, a2a::SESSION_PREFIX);
        a2a_sessions::sweep(&*services.store, &services.layout, &run.id, &prefix, ttl).await;
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
