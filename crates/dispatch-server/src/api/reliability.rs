//! Approvals and dead letters: list approvals, decide one (exactly like
//! `dispatch approve` / `dispatch deny`), list dead letters and replay one
//! into a new linked run (like `dispatch dlq replay`, queued for the workers
//! like `POST /v1/runs`).

use dispatch_api::{DecideBody, ReplayBody};
use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatch_core::{RunId, Status, now_ms};
use dispatch_runtime::approvals::{self, valid_approval_id};
use dispatch_store::{Decision, StoreError};
use serde_json::Value;

use super::runs::{Params, flag, params, resolve};
use super::schemas;
use super::{ApiError, ApiResult, AppState, codes};
use super::{wire, wire_runs};

/// `GET /v1/approvals?pending=true|false&run=<id-prefix>`: oldest first; only
/// pending ones unless `pending=false` (like `dispatch approvals ls`).
#[utoipa::path(
    get,
    path = "/v1/approvals",
    operation_id = "listApprovals",
    tag = "reliability",
    summary = "Approvals agents asked for, oldest first",
    params(schemas::ApprovalsQuery),
    responses(
        (status = 200, description = "the approvals", body = schemas::ApprovalList),
        (status = 400, description = "`bad_request`: a bad `pending`; `ambiguous_id`: `run` matches several runs", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is not bound to `project`", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches `run`", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Params,
) -> ApiResult<Json<dispatch_api::ApprovalList>> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["pending", "run", "project"])?;
    let pending = match params.get("pending") {
        None => true,
        Some(_) => flag(&params, "pending")?,
    };
    let projects =
        crate::auth::visible(token.as_deref(), params.get("project").map(String::as_str))?;
    let run = match params.get("run") {
        Some(prefix) => Some(resolve(&state, prefix).await?),
        None => None,
    };
    let list = state.store.list_approvals(run.as_ref(), pending).await?;
    let approvals = in_projects(&state, list, &projects)
        .await?
        .into_iter()
        .map(|(approval, project)| wire::approval(approval, Some(project)))
        .collect();
    Ok(Json(dispatch_api::ApprovalList { approvals }))
}

/// The approvals of `list` whose run is in `projects` (empty: all), each
/// with its run's project: an approval belongs to its run's project.
pub(crate) async fn in_projects(
    state: &AppState,
    list: Vec<dispatch_store::Approval>,
    projects: &[String],
) -> ApiResult<Vec<(dispatch_store::Approval, String)>> {
    let mut project_of: HashMap<RunId, String> = HashMap::new();
    let mut kept = Vec::with_capacity(list.len());
    for approval in list {
        let project = match project_of.get(&approval.run_id) {
            Some(p) => p.clone(),
            None => {
                let p = state.store.get_run(&approval.run_id).await?.project;
                project_of.insert(approval.run_id.clone(), p.clone());
                p
            }
        };
        if projects.is_empty() || projects.contains(&project) {
            kept.push((approval, project));
        }
    }
    Ok(kept)
}

/// `POST /v1/runs/{id}/approvals/{approval_id}`: records the decision (the
/// first one stands), writes the agent's decision file and resumes the run.
/// The approval of a run in review (`policy-review`) queues the run, or
/// cancels it. With a token, the decision names it beside `by` when they
/// differ: `ada (token ops-bot)`.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/approvals/{approval_id}",
    operation_id = "decideApproval",
    tag = "reliability",
    summary = "Decide an approval like dispatch approve/deny: the first decision stands, the agent reads it and the run resumes (a run in review is queued, or cancelled when denied)",
    params(
        ("id" = String, Path, description = "run id or unique prefix"),
        ("approval_id" = String, Path, description = "the approval's id, as the agent named it"),
    ),
    request_body = DecideBody,
    responses(
        (status = 200, description = "the decided approval", body = schemas::Approval),
        (status = 400, description = "`bad_request`: a bad body (decision other than approve/deny, empty `by`, input the tool's schema refuses); `ambiguous_id`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`; `approval_not_found`: the run has no approval of that id", body = schemas::Error),
        (status = 409, description = "`already_decided`: the first decision stands; `invalid_state`: the run has finished", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn decide(
    State(state): State<AppState>,
    Path((id, approval_id)): Path<(String, String)>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    body: Bytes,
) -> ApiResult<Json<dispatch_api::Approval>> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad decision: {e}")))?;
    super::runs::reject_nul(&value, "")?;
    if approval_id.contains('\0') {
        return Err(ApiError::bad_request(
            "the approval id holds a NUL byte (hint: remove it)",
        ));
    }
    let req: DecideBody = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("bad decision: {e}")))?;
    if req.decision != "approve" && req.decision != "deny" {
        return Err(ApiError::bad_request(format!(
            "decision `{}`: expected approve or deny",
            req.decision
        )));
    }
    if req.by.trim().is_empty() {
        return Err(ApiError::bad_request("`by` must name who decides"));
    }
    let id = resolve(&state, &id).await?;
    if !valid_approval_id(&approval_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::APPROVAL_NOT_FOUND,
            format!("run {id} has no approval `{approval_id}`"),
        ));
    }
    let run = state.store.get_run(&id).await?;
    if run.state.is_terminal() {
        // A decided approval stays decided, whatever the run became.
        let known = state.store.list_approvals(Some(&id), false).await?;
        if let Some(decided) = known
            .iter()
            .find(|a| a.id == approval_id)
            .and_then(|a| a.decision.clone())
        {
            return Err(StoreError::AlreadyDecided {
                run: id,
                id: approval_id,
                decision: decided,
            }
            .into());
        }
        return Err(StoreError::InvalidState {
            id,
            status: run.status(),
            hint: "it has already finished; there is nothing to decide",
        }
        .into());
    }
    let decision = Decision {
        decision: req.decision,
        by: decider(req.by.trim(), token.as_deref()),
        rationale: req.rationale,
        at: now_ms(),
        input: req.input,
    };
    let decided =
        approvals::decide(&*state.store, &state.layout, &id, &approval_id, &decision).await?;
    if run.status() == Status::Review {
        // Approved in review, the workers have a run to claim; denied, it
        // ended here, without a worker.
        let now = state.store.get_run(&id).await?;
        if now.status() == Status::Queued {
            super::lifecycle::joined_queue(&state, &now).await;
        } else if now.state.is_terminal() {
            state.traced(&id);
        }
    }
    Ok(Json(wire::approval(decided, None)))
}

/// Who decided: `by`, and the token that said so when it has another name.
fn decider(by: &str, token: Option<&dispatch_store::TokenRecord>) -> String {
    match token {
        Some(t) if t.name != by => format!("{by} (token {})", t.name),
        _ => by.to_string(),
    }
}

/// `GET /v1/dead-letters`: newest first, each with its run's parcel,
/// operation, input and status (like `dispatch dlq ls`).
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    operation_id = "listDeadLetters",
    tag = "reliability",
    summary = "Dead-lettered runs, newest first",
    params(("project" = Option<String>, Query, description = "only this project's (the token must be bound to it); default: every project the token may see")),
    responses(
        (status = 200, description = "the dead letters", body = schemas::DeadLetterList),
        (status = 400, description = "`bad_request`: a bad parameter or project name", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is not bound to `project`", body = schemas::Error),
    )
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Params,
) -> ApiResult<Json<dispatch_api::DeadLetterList>> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["project"])?;
    let projects =
        crate::auth::visible(token.as_deref(), params.get("project").map(String::as_str))?;
    let dead_letters = dead_letter_docs(&state, &projects).await?;
    Ok(Json(dispatch_api::DeadLetterList { dead_letters }))
}

/// The dead letters of runs in `projects` (empty: all), newest first, each
/// with its run's project, parcel, operation, input and status: the API and
/// the dashboard list them through this.
pub(crate) async fn dead_letter_docs(
    state: &AppState,
    projects: &[String],
) -> ApiResult<Vec<dispatch_api::DeadLetter>> {
    let mut docs = Vec::new();
    for letter in state.store.list_dead_letters().await? {
        let run = state.store.get_run(&letter.run_id).await?;
        if !projects.is_empty() && !projects.contains(&run.project) {
            continue;
        }
        docs.push(wire_runs::dead_letter(letter, &run));
    }
    Ok(docs)
}

/// `POST /v1/dead-letters/{id}/replay`: a new run of the same parcel and
/// operation, with the same input unless `payload` replaces it, linked by
/// `origin_id`, under the original run's stored policy (retries, timeouts,
/// limits); the dead letter notes it replayed it. 201 with the new run.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    operation_id = "replayDeadLetter",
    tag = "reliability",
    summary = "Replay a dead-lettered run as a new queued run linked by origin_id, under the original run's stored policy (body optional)",
    params(("id" = String, Path, description = "run id or unique prefix")),
    request_body(content = ReplayBody, description = "optional: an empty body replays the same input"),
    responses(
        (status = 201, description = "the new run", body = schemas::Run),
        (status = 400, description = "`bad_request`: a bad body; `ambiguous_id`; `missing_secret`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the server's policy denies running it again (the message says why); `cross_origin`: sent by a page of another origin", body = schemas::Error),
        (status = 404, description = "`run_not_found`; `dead_letter_not_found`: the run is not a dead letter; `parcel_not_found`: its parcel is gone", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ReplayBody = super::runs::optional_body(&body, "replay request")?;
    let id: RunId = resolve(&state, &id).await?;
    let who = super::policy::who(token.as_deref());
    let run = replay_dead_letter(&state, &id, req.payload, &who).await?;
    Ok((StatusCode::CREATED, Json(wire::run(&run))).into_response())
}

/// Replays the dead letter `id` as a new queued run (with `payload` in
/// place of its input, if given) and notes it replayed it: the API and the
/// dashboard replay through this.
pub(crate) async fn replay_dead_letter(
    state: &AppState,
    id: &RunId,
    payload: Option<Value>,
    who: &dispatch_policy::input::Who,
) -> ApiResult<dispatch_store::Run> {
    if state.store.dead_letter(id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::DEAD_LETTER_NOT_FOUND,
            format!(
                "run {id} is not in the dead-letter queue (hint: GET /v1/dead-letters lists it)"
            ),
        ));
    }
    let old = state.store.get_run(id).await?;
    // The same input in a new brief unless `payload` replaces it (like
    // `dispatch dlq replay`), under the original run's stored policy.
    let payload = payload.unwrap_or_else(|| old.payload.clone());
    let run = super::lifecycle::run_again(state, &old, Some(payload), who).await?;
    // The run exists: noting it waits out a lost database too (noting it
    // twice is harmless), so the caller does not replay it again.
    state
        .patience()
        .retry(|| async { Ok(state.store.mark_replayed(&old.id, &run.id).await?) })
        .await?;
    Ok(run)
}
