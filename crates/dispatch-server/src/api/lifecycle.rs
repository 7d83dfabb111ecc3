//! The lifecycle of one run beyond create and cancel, so the remote CLI has
//! the same verbs as the local one: `POST /v1/runs/{id}/start` (a created
//! run joins the queue: `dispatch start`), `POST /v1/runs/{id}/replay` (the
//! exact parcel, brief and payload again as a new linked run: `dispatch
//! replay` and `dispatch restart`), and `DELETE /v1/runs/{id}` (`dispatch rm`).

use dispatch_api::ReplayRunBody;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatch_core::Status;
use dispatch_core::policy::RunPolicy;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::{QueueOptions, RunExtras, StoreError};

use super::parcels::find_parcel;
use super::runs::{Params, flag, params, resolve, wait_for_end};
use super::wire;
use super::{ApiError, ApiResult, AppState, codes, schemas};

/// How long `DELETE …?force=true` waits for a live run's worker to stop it.
const FORCE_WAIT: Duration = Duration::from_secs(30);

/// `POST /v1/runs/{id}/start`: a created run (`"start": false` at creation)
/// joins the queue as its first attempt.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/start",
    operation_id = "startRun",
    tag = "runs",
    summary = "Queue a created run (made with \"start\": false) for the workers",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "queued", body = schemas::Run),
        (status = 400, description = "`ambiguous_id`: the prefix matches several runs", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
        (status = 409, description = "`invalid_state`: only a created run can be started", body = schemas::Error),
    )
)]
pub async fn start(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = resolve(&state, &id).await?;
    let run = state.store.get_run(&id).await?;
    if run.status() != Status::Created || run.stop_requested_at.is_some() {
        return Err(StoreError::InvalidState {
            id,
            status: run.status(),
            hint: "only a created run can be started (hint: replay it to run it again)",
        }
        .into());
    }
    let run = launch::start_created(&*state.store, &run).await?;
    joined_queue(&state, &run).await;
    Ok((StatusCode::OK, Json(wire::run(&run))).into_response())
}

/// Tells the workers that `run` joined the queue (started, or approved in
/// review): this process's are woken, the others hear it on the bus.
pub(super) async fn joined_queue(state: &AppState, run: &dispatch_store::Run) {
    state.wake.notify_one();
    if let Some(bus) = &state.bus
        && let Err(e) = bus.announce(run.id.as_str()).await
    {
        tracing::warn!(
            "[server] run {}: cannot announce it on the bus: {e}",
            run.id
        );
    }
}

/// `POST /v1/runs/{id}/replay`: a new queued run with the exact parcel
/// digest, brief and payload of run `id`, linked by `origin_id`, under its
/// stored policy (never its idempotency key or session).
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/replay",
    operation_id = "replayRun",
    tag = "runs",
    summary = "Run the exact parcel, brief and payload of a run again, as a new run linked by origin_id",
    params(("id" = String, Path, description = "run id or unique prefix")),
    request_body = ReplayRunBody,
    responses(
        (status = 201, description = "the new run", body = schemas::Run),
        (status = 400, description = "`bad_request`: a bad body, or `allow_side_effects` is not true; `ambiguous_id`; `missing_secret`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the server's policy denies running it again (the message says why); `cross_origin`: sent by a page of another origin", body = schemas::Error),
        (status = 404, description = "`run_not_found`; `parcel_not_found`: its parcel is gone", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ReplayRunBody = super::runs::optional_body(&body, "replay request")?;
    let id = resolve(&state, &id).await?;
    if !req.allow_side_effects {
        return Err(ApiError::bad_request(format!(
            "refusing to replay run {}: the agent runs again for real and may repeat its side effects (hint: send {{\"allow_side_effects\": true}})",
            id.short()
        )));
    }
    let old = state.store.get_run(&id).await?;
    let who = super::policy::who(token.as_deref());
    let run = run_again(&state, &old, None, &who).await?;
    Ok((StatusCode::CREATED, Json(wire::run(&run))).into_response())
}

/// Queues a new run of `old`'s parcel and operation, linked by `origin_id`,
/// under `old`'s stored policy (else the parcel's; never its key or
/// session): with `old`'s exact brief and payload, or with `payload` in a
/// new brief.
pub(crate) async fn run_again(
    state: &AppState,
    old: &dispatch_store::Run,
    payload: Option<serde_json::Value>,
    who: &dispatch_policy::input::Who,
) -> ApiResult<dispatch_store::Run> {
    let patience = state.patience();
    let parcel = patience
        .retry(|| find_parcel(state, &old.parcel_digest))
        .await?;
    launch::check_secrets(&parcel)?;
    let mut stored = patience
        .retry(|| async { Ok(state.store.run_extras(&old.id).await?) })
        .await?
        .policy
        .unwrap_or_else(|| {
            serde_json::to_value(RunPolicy::resolve(&parcel.manifest, &Default::default()))
                .expect("a policy is plain data")
        });
    let asked = payload.as_ref().unwrap_or(&old.payload);
    let passed = super::policy::gate_again(state, who, &parcel, old, asked, &mut stored)?;
    let request = LaunchRequest {
        source: parcel.digest.clone(),
        operation: Some(old.operation),
        payload: payload.clone().unwrap_or_else(|| old.payload.clone()),
        parent_id: old.parent_id.clone(),
        origin_id: Some(old.id.clone()),
        project: old.project.clone(),
    };
    let mut new = match payload {
        Some(_) => {
            patience
                .retry(|| super::publish::new_run(state, &parcel, &request, old.operation))
                .await?
        }
        None => {
            // The exact brief: it is in the store already (every run's is).
            patience
                .retry(|| super::publish::ensure_parcel(state, &parcel))
                .await?;
            request.new_run(&parcel, old.operation, old.brief_sha256.clone())
        }
    };
    new.trigger = dispatch_core::Trigger::Replay;
    let extras = RunExtras {
        policy: Some(stored),
        // The policy's decision, with the run; a review sends it there.
        events: passed
            .as_ref()
            .map(|p| dispatch_runtime::policy_gate::decision_event(&p.event))
            .into_iter()
            .collect(),
        review: passed.and_then(|p| p.review).map(|r| state.review(r)),
        ..RunExtras::default()
    };
    let created = super::create::enqueue(
        state,
        &patience,
        &new,
        &extras,
        &QueueOptions::default(),
        false,
    )
    .await?;
    Ok(created.run().clone())
}

/// `DELETE /v1/runs/{id}[?force=true]`: removes a finished run (its record,
/// events, attempts and log). A live run is refused unless `force`, which
/// cancels it and waits (up to 30 s) for its worker to stop it first.
#[utoipa::path(
    delete,
    path = "/v1/runs/{id}",
    operation_id = "deleteRun",
    tag = "runs",
    summary = "Remove a finished run; force=true cancels a live one first",
    params(
        ("id" = String, Path, description = "run id or unique prefix"),
        ("force" = Option<bool>, Query, description = "cancel a live run first, then remove it"),
    ),
    responses(
        (status = 200, description = "removed: `{\"removed\": id}`", body = schemas::Removed),
        (status = 400, description = "`bad_request`: an unknown or bad parameter; `ambiguous_id`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
        (status = 409, description = "`invalid_state`: the run is live (stop it, or force=true); `conflict`: its worker has not stopped it yet", body = schemas::Error),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Params,
) -> ApiResult<Response> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["force"])?;
    let force = flag(&params, "force")?;
    let id = resolve(&state, &id).await?;
    let run = state.store.get_run(&id).await?;
    if !run.state.is_terminal() {
        if !force {
            return Err(StoreError::InvalidState {
                id,
                status: run.status(),
                hint: "stop it first, or remove it with force=true (`rm -f`)",
            }
            .into());
        }
        let _ = super::runs::cancel(State(state.clone()), Path(id.to_string())).await;
        let run = wait_for_end(&state, &id, FORCE_WAIT).await?;
        if !run.state.is_terminal() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                codes::CONFLICT,
                format!(
                    "run {} is still {} after the cancel (hint: its worker stops it; try again)",
                    id.short(),
                    run.status()
                ),
            ));
        }
    }
    let archive = state.store.log_archive(&id).await?;
    let artifacts = state.store.list_artifacts(&id).await?;
    state.store.delete_run(&id).await?;
    dispatch_runtime::prune::remove_run_files(&state.layout, &id);
    // Its log archive and artifacts go too, unless another run has the same.
    super::prune::drop_log_archives(&state, archive.into_iter().collect()).await?;
    super::prune::drop_artifacts(&state, artifacts).await?;
    if let Err(e) = state.artifacts.delete_calls(&id).await {
        tracing::warn!(
            "[server] rm: model-call records of run {id} stay in {}: {}",
            state.artifacts.url(),
            dispatch_runtime::objects::chain(&e)
        );
    }
    let removed = schemas::Removed {
        removed: id.to_string(),
    };
    Ok((StatusCode::OK, Json(removed)).into_response())
}
