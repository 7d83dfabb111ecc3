//! `GET /v1/services`: the running services (runs of operation `service`,
//! live) with their stored state, as `GET /v1/runs/{id}/service` shows one
//! — the list the dashboard's services page shows too.

use axum::Json;
use axum::extract::State;
use dispatch_store::{Run, ServiceState};
use serde_json::{Value, json};

use super::runs::list_page;
use super::schemas;
use super::{ApiResult, AppState};

/// The most services listed.
pub const MAX: usize = 200;

/// The running services, newest first, each with its stored state (none
/// yet for one whose helper has not saved it).
pub async fn running(state: &AppState) -> ApiResult<Vec<(Run, Option<ServiceState>)>> {
    let pairs = vec![
        ("operation".to_string(), "service".to_string()),
        ("status".to_string(), "running,starting,paused".to_string()),
        ("limit".to_string(), MAX.to_string()),
    ];
    let (runs, _) = list_page(state, pairs, true).await?;
    let mut services = Vec::with_capacity(runs.len());
    for run in runs {
        let saved = state.store.get_service_state(&run.id).await?;
        services.push((run, saved));
    }
    Ok(services)
}

/// A service's stored state as `GET /v1/runs/{id}/service` answers it.
pub fn state_json(saved: &ServiceState) -> Value {
    json!({
        "name": saved.name,
        "config": saved.config,
        "schedules": saved.schedules,
        "listeners": saved.listeners,
        "updated_at": saved.updated_at,
    })
}

/// The running services.
#[utoipa::path(
    get,
    path = "/v1/services",
    operation_id = "listServices",
    tag = "services",
    summary = "The running services with their schedules and listeners",
    responses(
        (status = 200, description = "every running service (at most 200), newest first", body = schemas::ServiceList),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
    )
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let services: Vec<Value> = running(&state)
        .await?
        .iter()
        .map(|(run, saved)| {
            json!({
                "id": run.id,
                "parcel_name": run.parcel_name,
                "parcel_digest": run.parcel_digest,
                "status": run.status(),
                "created_at": run.created_at,
                "state": saved.as_ref().map(state_json),
            })
        })
        .collect();
    Ok(Json(json!({ "services": services })))
}
