//! Runs: create (optionally waiting for the end), get, list, cancel.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_core::brief::Brief;
use dispatch_core::id::normalize_prefix;
use dispatch_core::{NewEvent, Operation, RunId, Status, Transition, now_ms};
use dispatch_runtime::launch;
use dispatch_store::{NewRun, QueueOptions, Run, RunFilter, StateWrite, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ApiError, ApiResult, AppState};
use crate::callback;
use crate::metrics::Metrics;

/// The longest `?wait=true` blocks, whatever `timeout` asks.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// The page size when `limit` is not given, and the largest allowed.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// `POST /v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// A built parcel's name or digest (prefix); upload with `POST /v1/parcels`.
    pub parcel: String,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub operation: Option<Operation>,
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Higher is claimed first; default 0.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Labels a worker needs to run it (`gpu`, `eu`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// `http://host:port/path` to POST the finished run to, signed.
    #[serde(default)]
    pub callback_url: Option<String>,
}

pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn params(q: Params) -> ApiResult<HashMap<String, String>> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
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

fn number<T: std::str::FromStr>(
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

/// The full id of the one run whose id starts with `arg`.
pub(super) async fn resolve(state: &AppState, arg: &str) -> ApiResult<RunId> {
    let prefix = normalize_prefix(arg).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(state.store.resolve_prefix(&prefix).await?)
}

pub async fn create(
    State(state): State<AppState>,
    query: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let params = params(query)?;
    let wait = flag(&params, "wait")?;
    let timeout = number::<f64>(&params, "timeout")?
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, MAX_WAIT.as_secs_f64())))
        .unwrap_or(Duration::from_secs(30));
    let req: CreateRun = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad run request: {e}")))?;
    // Only built parcels: a server never builds from a path a client names.
    if req.parcel.is_empty() || req.parcel.contains('/') || req.parcel.starts_with('.') {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a parcel name or digest (hint: upload it with POST /v1/parcels)",
            req.parcel
        )));
    }
    let secret = match (&req.callback_url, &state.callback_secret) {
        (None, _) => None,
        (Some(url), _) if callback::split_url(url).is_none() => {
            return Err(ApiError::bad_request(format!(
                "callback_url `{url}` is not an http://host:port/path URL"
            )));
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "this server has no callback secret (hint: start it with DISPATCH_CALLBACK_SECRET set)",
            ));
        }
        (Some(_), Some(secret)) => Some(secret.clone()),
    };
    let parent_id = match &req.parent_id {
        Some(p) => Some(resolve(&state, p).await?),
        None => None,
    };
    let parcel = find_parcel(&state, &req.parcel)?;
    launch::check_secrets(&parcel)?;
    let operation = req.operation.unwrap_or(parcel.manifest.entrypoint);
    let payload = req.payload.unwrap_or_else(|| json!({}));
    let brief = Brief::assemble(&parcel, operation, payload.clone());
    super::publish::ensure_parcel(&state, &parcel).await?;
    let brief_sha256 = super::publish::brief(&state, &brief).await?;
    let new = NewRun {
        id: RunId::new(),
        parcel_digest: parcel.digest.clone(),
        parcel_name: parcel.manifest.name.clone(),
        operation,
        parent_id,
        origin_id: None,
        payload,
        brief_sha256,
        created_at: now_ms(),
    };
    let options = QueueOptions {
        priority: req.priority.unwrap_or(0),
        labels: req.labels,
        // Validated above: only with a secret to sign it.
        callback_url: req.callback_url.filter(|_| secret.is_some()),
    };
    let run = enqueue(&state, &new, &options).await?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if streaming {
        // The run's events as they happen, from its `created` event on.
        return Ok(super::stream::event_stream(state, run.id, 0));
    }
    if !wait {
        return Ok((StatusCode::CREATED, Json(run_json(&run))).into_response());
    }
    let run = wait_for_end(&state, &run.id, timeout).await?;
    // 200 with the finished run; 202 when the wait timed out first.
    let status = if run.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(run_json(&run))).into_response())
}

/// Queues a new run for the workers: stores it with its queue options, notes
/// its callback, counts it, wakes this process's workers and announces it on
/// the bus (in bus mode).
pub(super) async fn enqueue(
    state: &AppState,
    new: &NewRun,
    options: &QueueOptions,
) -> ApiResult<Run> {
    let run = state.store.enqueue(new, options).await?;
    if let Some(url) = &options.callback_url {
        let event = NewEvent::new(
            "callback_registered",
            run.attempt,
            now_ms(),
            json!({"url": url}),
        );
        state.store.append_events(&run.id, &[event]).await?;
    }
    Metrics::add(&state.metrics.runs_created, 1);
    state.wake.notify_one();
    if let Some(bus) = &state.bus
        && let Err(e) = bus.announce(run.id.as_str()).await
    {
        // The queue has the run; workers find it at their next poll.
        eprintln!(
            "[server] run {}: cannot announce it on the bus: {e}",
            run.id
        );
    }
    Ok(run)
}

/// A built parcel by exact name (the newest of that name) or digest prefix;
/// never a path on the server.
pub(super) fn find_parcel(
    state: &AppState,
    reference: &str,
) -> ApiResult<dispatch_core::parcel::Parcel> {
    let all = dispatch_core::parcel::list(&state.layout.parcels());
    if let Some(p) = all.iter().find(|p| p.manifest.name == reference) {
        return Ok(p.clone());
    }
    let by_digest: Vec<_> = all
        .iter()
        .filter(|p| reference.len() >= 4 && p.digest.starts_with(reference))
        .collect();
    match by_digest.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(dispatch_runtime::RuntimeError::UnknownParcel(reference.to_string()).into()),
        many => Err(ApiError::bad_request(format!(
            "`{reference}` matches {} parcels; give more characters of the digest",
            many.len()
        ))),
    }
}

/// Polls the run until it is terminal or `timeout` passes.
pub(super) async fn wait_for_end(
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
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A run as the API shows it: the stored record plus its status.
pub(super) fn run_json(run: &Run) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("status".into(), json!(run.status()));
    }
    v
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = resolve(&state, &id).await?;
    Ok(Json(run_json(&state.store.get_run(&id).await?)))
}

/// `GET /v1/runs?status=a,b&parcel=&parent=&limit=&cursor=`: newest first;
/// `next_cursor` fetches the following page.
pub async fn list(State(state): State<AppState>, query: Params) -> ApiResult<Json<Value>> {
    let params = params(query)?;
    let mut filter = RunFilter::default();
    if let Some(statuses) = params.get("status").filter(|s| !s.is_empty()) {
        for s in statuses.split(',') {
            filter.statuses.push(
                s.parse::<Status>()
                    .map_err(|e| ApiError::bad_request(format!("status: {e}")))?,
            );
        }
    }
    filter.parcel = params.get("parcel").cloned();
    if let Some(op) = params.get("operation") {
        filter.operation = Some(
            op.parse::<Operation>()
                .map_err(|e| ApiError::bad_request(format!("operation: {e}")))?,
        );
    }
    if let Some(parent) = params.get("parent") {
        filter.parent_id = Some(resolve(&state, parent).await?);
    }
    if let Some(cursor) = params.get("cursor") {
        filter.before =
            Some(cursor.parse().map_err(|_| {
                ApiError::bad_request(format!("cursor `{cursor}` is not a run id"))
            })?);
    }
    let limit = number::<usize>(&params, "limit")?
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    filter.limit = Some(limit);
    let runs = state.store.list_runs(&filter).await?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `POST /v1/runs/{id}/cancel`: a queued run is cancelled at once; a running
/// one gets a stop request that its worker passes on to the agent (202).
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
    loop {
        if run.status() != Status::Queued {
            return Ok((StatusCode::ACCEPTED, Json(run_json(&run))).into_response());
        }
        let t = Transition::Cancel {
            reason: "cancelled before it started".into(),
            exit_code: None,
            at: now_ms(),
        };
        let Ok(next) = run.state.apply(run.operation, &t) else {
            return Ok((StatusCode::ACCEPTED, Json(run_json(&run))).into_response());
        };
        let event = NewEvent::new(
            "state",
            run.attempt,
            now_ms(),
            json!({"from": run.status(), "to": next.status(), "reason": next.reason()}),
        );
        let write = StateWrite {
            state: next,
            event,
            output: None,
        };
        match state.store.transition(&id, run.version, &write).await {
            Ok(done) => return Ok((StatusCode::OK, Json(run_json(&done))).into_response()),
            // Claimed meanwhile: the worker sees the stop request.
            Err(StoreError::Conflict { .. }) => run = state.store.get_run(&id).await?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `GET /v1/runs/{id}/attempts`.
pub async fn attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = resolve(&state, &id).await?;
    Ok(Json(
        json!({"attempts": state.store.list_attempts(&id).await?}),
    ))
}

/// `GET /v1/runs/{id}/artifacts`.
pub async fn artifacts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = resolve(&state, &id).await?;
    Ok(Json(
        json!({"artifacts": state.store.list_artifacts(&id).await?}),
    ))
}
