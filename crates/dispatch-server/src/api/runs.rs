//! Runs: get, list, cancel, attempts, artifacts (`create.rs` creates them).

use dispatch_core::EventKind;
use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatch_core::id::normalize_prefix;
use dispatch_core::time::parse_time;
use dispatch_core::{NewEvent, Operation, RunId, Status, Transition, Ts, now_ms};
use dispatch_store::{Run, RunFilter, StateWrite, StoreError};
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, ApiResult, AppState};
use super::{schemas, wire, wire_runs};

/// The page size when `limit` is not given, and the largest allowed.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn params(q: Params) -> ApiResult<HashMap<String, String>> {
    let params = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    for (k, v) in &params {
        if k.contains('\0') || v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "query parameter `{}` holds a NUL byte (hint: remove it; no run, label or key can contain one)",
                k.replace('\0', "\\0")
            )));
        }
    }
    Ok(params)
}

/// Refuses a query parameter the route does not take (a misspelt filter
/// must not silently match everything).
pub(super) fn only_known<'a>(
    keys: impl IntoIterator<Item = &'a String>,
    allowed: &[&str],
) -> ApiResult<()> {
    for k in keys {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{}` (this route takes {})",
                dispatch_core::event::shorten(k, 80),
                match allowed.is_empty() {
                    true => "none".to_string(),
                    false => format!("only: {}", allowed.join(", ")),
                }
            )));
        }
    }
    Ok(())
}

/// Refuses a NUL byte in any string of `value` (but the run's `payload`,
/// which is kept as JSON text): the stores cannot keep one, and the answer
/// must say which field, not that the database is unavailable.
pub(super) fn reject_nul(value: &serde_json::Value, path: &str) -> ApiResult<()> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Err(ApiError::bad_request(format!(
            "`{path}` holds a NUL byte (hint: remove it)"
        ))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| reject_nul(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            let field = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                return Err(ApiError::bad_request(format!(
                    "a key in `{path}` holds a NUL byte (hint: remove it)"
                )));
            }
            if path.is_empty() && k == "payload" {
                return Ok(());
            }
            reject_nul(v, &field)
        }),
        _ => Ok(()),
    }
}

pub(super) fn flag(params: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}={other}: expected true or false"
        ))),
    }
}

pub(super) fn number<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> ApiResult<Option<T>> {
    params
        .get(name)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("{name}={v}: expected a number")))
        })
        .transpose()
}

/// The number `name`, if given, within `min..=max` (the bounds the
/// OpenAPI document states); anything else is a 400 that names them.
/// (`NaN` and infinities are outside every range.)
pub(super) fn bounded<T>(
    params: &HashMap<String, String>,
    name: &str,
    min: T,
    max: T,
) -> ApiResult<Option<T>>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match number::<T>(params, name)? {
        Some(v) if min <= v && v <= max => Ok(Some(v)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name}={}: expected {min} to {max}",
            dispatch_core::event::shorten(params.get(name).map_or("", String::as_str), 40)
        ))),
        None => Ok(None),
    }
}

/// The full id of the one run whose id starts with `arg`.
/// A running cluster service's name stands for its run (`dispatch stop
/// hooks-eu`), when no run id starts with it.
pub(crate) async fn resolve(state: &AppState, arg: &str) -> ApiResult<RunId> {
    let by_id = match normalize_prefix(arg) {
        Ok(prefix) => match state.store.resolve_prefix(&prefix).await {
            Err(dispatch_store::StoreError::NotFound(_)) => None,
            found => return Ok(found?),
        },
        Err(e) => Some(ApiError::bad_request(e.to_string())),
    };
    if let Some(service) = state.store.service_named(arg).await? {
        return Ok(service.run_id);
    }
    match by_id {
        Some(bad) => Err(bad),
        None => Err(dispatch_store::StoreError::NotFound(arg.to_string()).into()),
    }
}

/// An optional JSON body: empty (or only whitespace) is `T::default()`,
/// anything else must parse; `what` names the request in the error.
pub(super) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad {what}: {e}")))
}

/// Polls the run until it is terminal or `timeout` passes.
pub(crate) async fn wait_for_end(
    state: &AppState,
    id: &RunId,
    timeout: Duration,
) -> ApiResult<Run> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let run = state.store.get_run(id).await?;
        if run.state.is_terminal() || Instant::now() >= deadline {
            return Ok(run);
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        // Quick at first (a short run), then a look every quarter second.
        let cap = if pause < Duration::from_millis(50) {
            50
        } else {
            250
        };
        pause = (pause * 2).min(Duration::from_millis(cap));
    }
}

/// The longest `GET /v1/runs/{id}?wait=` holds the request.
const MAX_GET_WAIT: Duration = Duration::from_secs(60);

/// `GET /v1/runs/{id}[?wait=SECONDS]`: the run; with `wait`, once it has
/// ended or after that long (at most 60 s), whichever comes first — a long
/// poll, so a client waiting for a run asks once per period, not in a loop.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    operation_id = "getRun",
    tag = "runs",
    summary = "One run; an id prefix is enough",
    params(("id" = String, Path, description = "run id or unique prefix"), schemas::GetRunQuery),
    responses(
        (status = 200, description = "the run", body = schemas::Run),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Params,
) -> ApiResult<Json<dispatch_api::Run>> {
    let params = params(query)?;
    only_known(params.keys(), &["wait"])?;
    let wait =
        bounded(&params, "wait", 0.0, MAX_GET_WAIT.as_secs_f64())?.map(Duration::from_secs_f64);
    let id = resolve(&state, &id).await?;
    let run = match wait {
        Some(wait) => wait_for_end(&state, &id, wait).await?,
        None => state.store.get_run(&id).await?,
    };
    let mut doc = wire::run(&run);
    doc.concurrency = state
        .store
        .run_extras(&id)
        .await?
        .concurrency
        .map(wire::concurrency);
    super::waiting::annotate(
        &state,
        std::slice::from_ref(&run),
        std::slice::from_mut(&mut doc),
    )
    .await;
    Ok(Json(doc))
}

/// `GET /v1/runs?status=a,b&parcel=&operation=&parent=&label=a,b&created_after=&created_before=&limit=&cursor=`:
/// newest first; `next_cursor` fetches the following page.
///
/// A run must have every `label` given (comma-separated, or the parameter
/// repeated). `created_after` (inclusive) and `created_before` (exclusive)
/// take an RFC 3339 time or an age before now (`30s`, `10m`, `2h`, `7d`); a
/// client paging through an age should send the time it resolved instead,
/// so that every page has the same bounds.
#[utoipa::path(
    get,
    path = "/v1/runs",
    operation_id = "listRuns",
    tag = "runs",
    summary = "Runs, filtered, newest first, a page at a time",
    params(schemas::ListRunsQuery),
    responses(
        (status = 200, description = "a page of runs", body = schemas::RunPage),
        (status = 400, description = "`bad_request`: a bad filter, project name, time, cursor or limit; `ambiguous_id`: `parent` matches several runs", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is not bound to `project`", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches `parent`", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<dispatch_api::RunPage>> {
    let pairs = query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let (runs, next) = list_page(&state, pairs, false, token.as_deref()).await?;
    let mut docs: Vec<dispatch_api::Run> = runs.iter().map(wire::run).collect();
    super::waiting::annotate(&state, &runs, &mut docs).await;
    Ok(Json(dispatch_api::RunPage {
        next_cursor: next,
        runs: docs,
    }))
}

/// The query parameters `GET /v1/runs` takes.
pub(crate) const LIST_PARAMS: [&str; 11] = [
    "project",
    "status",
    "parcel",
    "operation",
    "parent",
    "label",
    "trigger",
    "created_after",
    "created_before",
    "limit",
    "cursor",
];

/// One page of runs for the query `pairs` of `GET /v1/runs`, and the cursor
/// of the next page: the API and the dashboard read runs through this one
/// function. `summary` leaves out what a table does not show. Only runs of
/// the projects `token` may see are listed (of `project`, when given,
/// which it must be bound to).
pub(crate) async fn list_page(
    state: &AppState,
    pairs: Vec<(String, String)>,
    summary: bool,
    token: Option<&dispatch_store::TokenRecord>,
) -> ApiResult<(Vec<Run>, Option<String>)> {
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(ApiError::bad_request(format!(
            "query parameter `{}` holds a NUL byte (hint: remove it; no run, label or key can contain one)",
            k.replace('\0', "\\0")
        )));
    }
    let mut filter = RunFilter {
        labels: pairs
            .iter()
            .filter(|(k, _)| k == "label")
            .flat_map(|(_, v)| v.split(','))
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        summary,
        ..RunFilter::default()
    };
    only_known(pairs.iter().map(|(k, _)| k), &LIST_PARAMS)?;
    // Any other parameter given twice: the last one counts.
    let params: HashMap<String, String> = pairs.into_iter().collect();
    if let Some(statuses) = params.get("status").filter(|s| !s.is_empty()) {
        for s in statuses.split(',') {
            filter.statuses.push(
                s.parse::<Status>()
                    .map_err(|e| ApiError::bad_request(format!("status: {e}")))?,
            );
        }
    }
    filter.projects = crate::auth::visible(token, params.get("project").map(String::as_str))?;
    filter.parcel = params.get("parcel").cloned();
    if let Some(op) = params.get("operation") {
        filter.operation = Some(
            op.parse::<Operation>()
                .map_err(|e| ApiError::bad_request(format!("operation: {e}")))?,
        );
    }
    if let Some(trigger) = params.get("trigger") {
        filter.trigger = Some(
            trigger
                .parse::<dispatch_core::Trigger>()
                .map_err(|e| ApiError::bad_request(format!("trigger: {e}")))?,
        );
    }
    let now = now_ms();
    filter.created_after = time(&params, "created_after", now)?;
    filter.created_before = time(&params, "created_before", now)?;
    if let Some(parent) = params.get("parent") {
        filter.parent_id = Some(resolve(state, parent).await?);
    }
    if let Some(cursor) = params.get("cursor") {
        filter.before =
            Some(cursor.parse().map_err(|_| {
                ApiError::bad_request(format!("cursor `{cursor}` is not a run id"))
            })?);
    }
    // 0 counts as 1; above MAX_PAGE is refused (the document's maximum).
    let limit = bounded(&params, "limit", 0, MAX_PAGE)?
        .unwrap_or(DEFAULT_PAGE)
        .max(1);
    filter.limit = Some(limit);
    let runs = state.store.list_runs(&filter).await?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.to_string()))
        .flatten();
    Ok((runs, next))
}

/// The time parameter `name`, if given (see [`parse_time`]).
pub(super) fn time(params: &HashMap<String, String>, name: &str, now: Ts) -> ApiResult<Option<Ts>> {
    let Some(value) = params.get(name) else {
        return Ok(None);
    };
    parse_time(value, now).map(Some).map_err(|e| {
        // A `+` left unencoded in a query string arrives as a space.
        let hint = if value.contains(' ') {
            " (hint: write the + of a UTC offset as %2B)"
        } else {
            ""
        };
        ApiError::bad_request(format!("{name}: {e}{hint}"))
    })
}

/// `POST /v1/runs/{id}/cancel`: a queued run is cancelled at once; a running
/// one gets a stop request that its worker passes on to the agent (202).
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    operation_id = "cancelRun",
    tag = "runs",
    summary = "Cancel a run: a queued one at once, a running one through its worker",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "cancelled (it was queued)", body = schemas::Run),
        (status = 202, description = "stop requested: its worker stops it", body = schemas::Run),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
        (status = 409, description = "`invalid_state`: it has already finished; `conflict`: retry", body = schemas::Error),
    )
)]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = resolve(&state, &id).await?;
    let mut run = state.store.get_run(&id).await?;
    if run.state.is_terminal() {
        return Err(StoreError::InvalidState {
            id,
            status: run.status(),
            hint: "it has already finished",
        }
        .into());
    }
    run = state.store.request_stop(&id, now_ms()).await?;
    // A cluster service has no process to signal: it stops here.
    if crate::services::is_cluster_service(&state.store, &run).await? {
        let stopped = state.services().stop(run, "stopped by user").await?;
        return Ok((StatusCode::OK, Json(wire::run(&stopped))).into_response());
    }
    loop {
        // A queued run, or a suspended one (no process holds it), ends here.
        let reason = match &run.state {
            dispatch_core::RunState::Suspended { reason, .. } => {
                format!("cancelled while {reason}")
            }
            dispatch_core::RunState::Review { .. } => "cancelled in review".into(),
            _ if matches!(run.status(), Status::Queued | Status::Created) => {
                "cancelled before it started".into()
            }
            _ => return Ok((StatusCode::ACCEPTED, Json(wire::run(&run))).into_response()),
        };
        let t = Transition::Cancel {
            reason,
            exit_code: None,
            at: now_ms(),
        };
        let Ok(next) = run.state.apply(run.operation, &t) else {
            return Ok((StatusCode::ACCEPTED, Json(wire::run(&run))).into_response());
        };
        let event = NewEvent::new(
            EventKind::State,
            run.attempt,
            now_ms(),
            json!({"from": run.status(), "to": next.status(), "reason": next.reason()}),
        );
        let write = StateWrite::new(next, event);
        match state.store.transition(&id, run.version, &write).await {
            Ok(done) => {
                state.traced(&id);
                return Ok((StatusCode::OK, Json(wire::run(&done))).into_response());
            }
            // Claimed meanwhile: the worker sees the stop request.
            Err(StoreError::Conflict { .. }) => run = state.store.get_run(&id).await?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `GET /v1/runs/{id}/attempts`.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/attempts",
    operation_id = "listAttempts",
    tag = "runs",
    summary = "The run's attempts",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "its attempts, oldest first", body = schemas::AttemptList),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dispatch_api::AttemptList>> {
    let id = resolve(&state, &id).await?;
    let attempts = state.store.list_attempts(&id).await?;
    Ok(Json(dispatch_api::AttemptList {
        attempts: attempts.iter().map(wire_runs::attempt).collect(),
    }))
}

/// `GET /v1/runs/{id}/artifacts`.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/artifacts",
    operation_id = "listArtifacts",
    tag = "runs",
    summary = "The run's artifacts",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "its artifacts", body = schemas::ArtifactList),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn artifacts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dispatch_api::ArtifactList>> {
    let id = resolve(&state, &id).await?;
    let artifacts = state.store.list_artifacts(&id).await?;
    Ok(Json(dispatch_api::ArtifactList {
        artifacts: artifacts.iter().map(wire_runs::artifact).collect(),
    }))
}
