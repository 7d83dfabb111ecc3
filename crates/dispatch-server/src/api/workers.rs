//! `GET /v1/workers`: the cluster's workers seen in the last day (this
//! server's own and `dispatch worker` processes), from
//! [`dispatch_store::WorkerStore`] — the list the dashboard's workers page
//! shows too.

use super::schemas;
use super::{ApiResult, AppState, wire_ops};
use crate::presence::SILENT_AFTER;
use axum::Json;
use axum::extract::State;
use dispatch_core::now_ms;
use dispatch_store::WorkerInfo;

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
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<schemas::WorkerList>> {
    let now = now_ms();
    let workers = listed(&state)
        .await?
        .iter()
        .map(|w| wire_ops::worker(w, state_of(w, now)))
        .collect();
    Ok(Json(schemas::WorkerList { workers }))
}
