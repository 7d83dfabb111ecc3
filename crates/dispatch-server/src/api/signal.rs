//! `POST /v1/runs/{id}/signal`: sends a named signal, with an optional JSON
//! value, to a run (like `dispatch signal`). A run suspended waiting for it
//! is queued for its next attempt at once, which finds the value in
//! `$DISPATCH_RESUME`; a run not waiting for it (yet) keeps it for its first
//! wait on that name.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use dispatch_api::SignalBody;
use dispatch_runtime::suspend::{self, Delivery};
use serde_json::Value;

use super::runs::resolve;
use super::wire;
use super::{ApiError, ApiResult, AppState, schemas};

/// 200 with `{"delivered": "woke" | "kept", "run": …}`; 404 for an unknown
/// run, 409 for a finished one, 400 for a bad body or name.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/signal",
    operation_id = "signalRun",
    tag = "runs",
    summary = "Send a signal: a run suspended waiting for it is queued for its next attempt with the value; otherwise it is kept for the run's first wait on that name",
    params(("id" = String, Path, description = "run id or unique prefix")),
    request_body = SignalBody,
    responses(
        (status = 200, description = "delivered (`woke`) or kept (`kept`)", body = schemas::SignalAnswer),
        (status = 400, description = "`bad_request`: a bad body or signal name; `ambiguous_id`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`", body = schemas::Error),
        (status = 409, description = "`invalid_state`: the run has finished", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
        (status = 500, description = "`internal`", body = schemas::Error),
        (status = 503, description = "`unavailable`: the database is out of reach", body = schemas::Error),
    )
)]
pub async fn signal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<dispatch_api::SignalAnswer>> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad signal: {e} (hint: {{\"name\": \"payment-received\", \"value\": {{\"amount\": 12}}}})"
        ))
    })?;
    super::runs::reject_nul(&value, "")?;
    let req: SignalBody = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("bad signal: {e}")))?;
    let id = resolve(&state, &id).await?;
    let (delivered, run) = match suspend::signal(&*state.store, &id, &req.name, req.value).await? {
        Delivery::Woke(run) => ("woke", *run),
        Delivery::Kept => ("kept", state.store.get_run(&id).await?),
    };
    Ok(Json(dispatch_api::SignalAnswer {
        delivered: delivered.to_string(),
        run: wire::run(&run),
    }))
}
