//! `GET /v1/runs/{id}/graph`: a workflow run's communication graph — its
//! members (turns, child runs, usage), the edges messages took with counts
//! by kind, and the messages (sender, receiver, kind, time, child runs).
//! A run that sent no messages has an empty graph.

use axum::Json;
use axum::extract::{Path, State};

use super::runs::resolve;
use super::{ApiResult, AppState};
use super::{schemas, wire_runs};

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/graph",
    operation_id = "getRunGraph",
    tag = "runs",
    summary = "A workflow run's communication graph: members with their turns and usage, edges with message counts by kind, and the messages",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "its graph (empty for a run that is not a workflow)", body = schemas::Graph),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn graph(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dispatch_api::Graph>> {
    let id = resolve(&state, &id).await?;
    let run = state.store.get_run(&id).await?;
    Ok(Json(wire_runs::graph(&state, &run).await?))
}
