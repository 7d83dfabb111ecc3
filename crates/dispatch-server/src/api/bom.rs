//! `GET /v1/runs/{id}/bom`: the bill of materials of each attempt of a
//! native run — models and providers (hosts, never keys), every tool with
//! the digest of its schema and its policies, each MCP server's name,
//! version and the digest of its `tools/list`, the limits — as its `bom`
//! events recorded them when the attempt started.

use axum::Json;
use axum::extract::{Path, State};
use dispatch_core::EventKind;
use serde_json::Value;

use super::runs::resolve;
use super::{ApiResult, AppState};
use super::{schemas, wire_runs};

/// Events read per page while looking for `bom` events.
const PAGE: usize = 1000;

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/bom",
    operation_id = "getRunBom",
    tag = "runs",
    summary = "The bill of materials of each attempt of a native run (models, tools and their schema digests, MCP servers and their tools/list digests, limits)",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "its bills of materials", body = schemas::Bom),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn bom(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dispatch_api::Bom>> {
    let id = resolve(&state, &id).await?;
    let mut attempts = Vec::new();
    let mut after = 0;
    loop {
        let events = state.store.list_events(&id, after, PAGE).await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        let full = events.len() == PAGE;
        attempts.extend(
            events
                .into_iter()
                .filter(|e| e.event.is(EventKind::Bom))
                .map(wire_runs::bom_attempt),
        );
        if !full {
            break;
        }
    }
    let bom = attempts.last().map_or(Value::Null, |a| a.bom.clone());
    Ok(Json(dispatch_api::Bom {
        attempts,
        bom,
        run: id.to_string(),
    }))
}
