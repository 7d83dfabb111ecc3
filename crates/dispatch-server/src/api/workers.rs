//! `GET /v1/workers`: the cluster's workers seen in the last day (this
//! server's own and `dispatch worker` processes), from
//! [`dispatch_store::WorkerStore`] — the list the dashboard's workers page
//! shows too.

use axum::Json;
use axum::extract::State;
use dispatch_core::now_ms;
use dispatch_store::WorkerInfo;
use serde_json::{Value, json};

use super::schemas;
use super::{ApiResult, AppState};
use crate::presence::SILENT_AFTER;

/// Workers not seen for this long are left out.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// What a worker is doing, as far as the store knows: `stopped` (it said
/// so), `silent` (not heard from for three beats: its leases expire and its
/// runs go back to the queue), else `working`.
pub fn state_of(w: &WorkerInfo, now: i64) -> &'static str {
    let silent_after = i64::try_from(SILENT_AFTER.as_millis()).unwrap_or(15_000);
    if w.beat.stopped_at.is_some() {
        "stopped"
    } else if now - w.beat.seen_at > silent_after {
        "silent"
    } else {
        "working"
    }
}

/// The workers seen in the last day, by name.
pub async fn listed(state: &AppState) -> ApiResult<Vec<WorkerInfo>> {
    Ok(state.store.list_workers(now_ms() - DAY_MS).await?)
}

fn worker_json(w: &WorkerInfo, now: i64) -> Value {
    json!({
        "name": w.beat.name,
        "state": state_of(w, now),
        "labels": w.beat.labels,
        "slots": w.beat.slots,
        "used": w.held,
        "lease_ms": w.beat.lease_ms,
        "renewed_at": w.renewed_at,
        "started_at": w.beat.started_at,
        "seen_at": w.beat.seen_at,
        "stopped_at": w.beat.stopped_at,
        "host": w.beat.host,
        "pid": w.beat.pid,
    })
}

/// The cluster's workers.
#[utoipa::path(
    get,
    path = "/v1/workers",
    operation_id = "listWorkers",
    tag = "operations",
    summary = "The workers seen in the last day",
    responses(
        (status = 200, description = "every worker seen in the last day, by name", body = schemas::WorkerList),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
    )
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let workers: Vec<Value> = listed(&state)
        .await?
        .iter()
        .map(|w| worker_json(w, now))
        .collect();
    Ok(Json(json!({ "workers": workers })))
}
