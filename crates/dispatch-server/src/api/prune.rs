//! `POST /v1/runs/prune`: removes finished runs, as `dispatch prune` does
//! locally and as Docker's `POST /containers/prune` does: the same filters
//! (`status`, `until`, `parcel`), the same selection (runs with a dead
//! letter not replayed yet or a pending approval are kept unless
//! `dead_letters`), their rows in the store (events, attempts, artifacts'
//! records, approvals, dead letters, shipped logs), their files on the
//! server, the briefs no remaining run references, and the artifacts and
//! log archives no remaining run records from the cluster's object store
//! (the database, or `--artifacts URL`). `dry_run` says what
//! would go without removing anything (the CLI asks for confirmation with it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use dispatch_api::PruneBody;
use dispatch_core::Status;
use dispatch_core::time::{TIME_FORMS, now_ms, parse_time};
use dispatch_runtime::prune::{PruneFilter, prune_runs, select};
use dispatch_store::RunFilter;
use serde_json::Value;

use super::{ApiError, ApiResult, AppState, schemas};

/// The filter the body describes; a 400 says what is wrong.
fn filter_of(body: &PruneBody) -> ApiResult<PruneFilter> {
    let mut filter = PruneFilter {
        dead_letters: body.dead_letters,
        ..PruneFilter::default()
    };
    for value in &body.filters.status {
        let status: Status = value.parse().map_err(ApiError::bad_request)?;
        if !status.is_terminal() {
            return Err(ApiError::bad_request(format!(
                "filters.status `{value}`: prune removes finished runs only (hint: succeeded, failed, timed_out, cancelled or stopped)"
            )));
        }
        filter.statuses.push(status);
    }
    let now = now_ms();
    for value in &body.filters.until {
        let at = parse_time(value, now).map_err(|e| {
            ApiError::bad_request(format!("filters.until: {e} (hint: {TIME_FORMS})"))
        })?;
        filter.until = Some(filter.until.map_or(at, |u| u.min(at)));
    }
    for value in &body.filters.parcel {
        if value.trim().is_empty() {
            return Err(ApiError::bad_request(
                "filters.parcel: a parcel name or digest prefix may not be empty",
            ));
        }
        filter.parcels.push(value.clone());
    }
    Ok(filter)
}

/// 200 with `{"removed": [ids], "reclaimed_bytes": n, "kept": n, "dry_run": b}`.
#[utoipa::path(
    post,
    path = "/v1/runs/prune",
    operation_id = "pruneRuns",
    tag = "runs",
    summary = "Remove finished runs (filtered by status, end time and parcel) with their events, logs, records and briefs; runs with a dead letter or a pending approval are kept unless dead_letters",
    request_body(content = PruneBody, description = "required: `{}` removes every finished run without a dead letter or pending approval", content_type = "application/json"),
    responses(
        (status = 200, description = "what was removed (or, with dry_run, would be)", body = schemas::PruneAnswer),
        (status = 400, description = "`bad_request`: a bad body or filter, or a query parameter (the filters go in the body)", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
        (status = 500, description = "`internal`", body = schemas::Error),
        (status = 503, description = "`unavailable`: the database is out of reach", body = schemas::Error),
    )
)]
pub async fn prune(
    State(state): State<AppState>,
    query: super::runs::Params,
    body: Bytes,
) -> ApiResult<Json<schemas::PruneAnswer>> {
    // The filters go in the body: a filter misplaced in the query string
    // must not prune everything.
    let params = super::runs::params(query)?;
    super::runs::only_known(params.keys(), &[])?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "prune needs a body saying what to remove (hint: `{}` for every finished run, or {\"filters\": {\"status\": [\"succeeded\"], \"until\": [\"24h\"]}})",
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad prune request: {e} (hint: {{\"filters\": {{\"status\": [\"succeeded\"], \"until\": [\"24h\"]}}}})"
        ))
    })?;
    let req: PruneBody = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("bad prune request: {e}")))?;
    let filter = filter_of(&req)?;
    let runs = state.store.list_runs(&RunFilter::default()).await?;
    let found = select(&*state.store, runs, &filter).await?;
    let ids = |runs: &[dispatch_store::Run]| -> Vec<String> {
        runs.iter().map(|r| r.id.to_string()).collect()
    };
    if req.dry_run {
        return Ok(Json(schemas::PruneAnswer {
            removed: ids(&found.runs),
            reclaimed_bytes: 0,
            kept: u64::try_from(found.kept).unwrap_or(u64::MAX),
            dry_run: true,
        }));
    }
    let mut briefs: Vec<String> = found.runs.iter().map(|r| r.brief_sha256.clone()).collect();
    briefs.sort();
    briefs.dedup();
    let mut archives = Vec::new();
    let mut artifacts = Vec::new();
    for run in &found.runs {
        archives.extend(state.store.log_archive(&run.id).await?);
        artifacts.extend(state.store.list_artifacts(&run.id).await?);
    }
    let mut report = prune_runs(&*state.store, &state.layout, &found.runs).await?;
    for run in &found.runs {
        let _ = state.artifacts.delete_calls(&run.id).await;
    }
    report.reclaimed_bytes += drop_log_archives(&state, archives).await?;
    report.reclaimed_bytes += drop_artifacts(&state, artifacts).await?;
    // Briefs travel through the store on a cluster: those only the pruned runs had go too.
    report.reclaimed_bytes += state.store.delete_unreferenced_briefs(&briefs).await?;
    Ok(Json(schemas::PruneAnswer {
        removed: report.removed.iter().map(|id| id.to_string()).collect(),
        reclaimed_bytes: report.reclaimed_bytes,
        kept: u64::try_from(found.kept).unwrap_or(u64::MAX),
        dry_run: false,
    }))
}

/// Deletes the artifacts of `artifacts` (those of runs just removed) that
/// no remaining run records from the object store (content-addressed: one
/// object may be the artifact of many runs). The bytes reclaimed (of the
/// objects that were there: on SQLite the store is this server's
/// `.dispatch/`, whose files the prune removed already).
pub(super) async fn drop_artifacts(
    state: &AppState,
    artifacts: Vec<dispatch_store::Artifact>,
) -> ApiResult<u64> {
    let mut shas: Vec<String> = artifacts.into_iter().map(|a| a.sha256).collect();
    shas.sort();
    shas.dedup();
    let mut reclaimed = 0;
    for sha in shas {
        if state.store.artifact_in_use(&sha).await? {
            continue;
        }
        let result = async {
            let size = state.artifacts.artifact_size(&sha).await?;
            state.artifacts.delete_artifact(&sha).await?;
            Ok::<_, dispatch_runtime::objects::ObjectsError>(size)
        }
        .await;
        match result {
            Ok(size) => reclaimed += size.unwrap_or(0),
            Err(e) => tracing::warn!(
                "[server] artifact {sha} stays in {}: {}",
                state.artifacts.url(),
                dispatch_runtime::objects::chain(&e)
            ),
        }
    }
    Ok(reclaimed)
}

/// Deletes the log archives of `archives` (those of runs just removed) that
/// no remaining run has, from the artifact store and this server's copies.
/// The bytes reclaimed.
pub(super) async fn drop_log_archives(
    state: &AppState,
    archives: Vec<dispatch_store::LogArchive>,
) -> ApiResult<u64> {
    let mut reclaimed = 0;
    for archive in archives {
        if state.store.log_archive_in_use(&archive.sha256).await? {
            continue;
        }
        let _ = std::fs::remove_file(state.layout.log_archives().join(&archive.sha256));
        match state.artifacts.delete_log(&archive.sha256).await {
            Ok(()) => reclaimed += archive.size,
            Err(e) => tracing::warn!(
                "[server] log archive {} stays in {}: {}",
                archive.sha256,
                state.artifacts.url(),
                dispatch_runtime::objects::chain(&e)
            ),
        }
    }
    Ok(reclaimed)
}
