//! `POST /v1/runs/{id}/signal`: sends a named signal, with an optional JSON
//! value, to a run (like `dispatch signal`). A run suspended waiting for it
//! is queued for its next attempt at once, which finds the value in
//! `$DISPATCH_RESUME`; a run not waiting for it (yet) keeps it for its first
//! wait on that name.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use dispatch_runtime::suspend::{self, Delivery};
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::{resolve, run_json};
use super::{ApiError, ApiResult, AppState};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// The signal's name (letters, digits, `-`, `_`, `.`, `:`).
    pub name: String,
    /// Handed to the woken attempt; `null` when not given.
    #[serde(default)]
    pub value: Value,
}

/// 200 with `{"delivered": "woke" | "kept", "run": …}`; 404 for an unknown
/// run, 409 for a finished one, 400 for a bad body or name.
pub async fn signal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"delivered": delivered, "run": run_json(&run)})))
}
