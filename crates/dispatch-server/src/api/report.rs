//! `GET /v1/runs/{id}/report`: everything about a run in one answer — the
//! run, its attempts with usage and resources, the timeline of steps, tool
//! and model calls, usage by model, approvals, dead letter, artifacts,
//! events, workflow graph and service state — as
//! [`dispatch_runtime::report`] builds it for `dispatch inspect-run`
//! (`--host` asks this once) and the dashboard's run page.

use axum::Json;
use axum::extract::{Path, State};
use dispatch_core::{RunState, now_ms};
use dispatch_runtime::report::{self, Place, RunReport};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::runs::resolve;
use super::schemas;
use super::{ApiResult, AppState};

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/report",
    operation_id = "getRunReport",
    tag = "runs",
    summary = "Everything about a run in one answer (what `dispatch inspect-run` prints): attempts, timeline, tool and model calls, usage, approvals, artifacts, events",
    params(("id" = String, Path, description = "run id or unique prefix")),
    responses(
        (status = 200, description = "its report", body = Report),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunReport>> {
    let id = resolve(&state, &id).await?;
    Ok(Json(of(&state, &id).await?))
}

/// The report of run `id` as this server sees it (also the dashboard's).
pub(crate) async fn of(state: &AppState, id: &dispatch_core::RunId) -> ApiResult<RunReport> {
    let run = state.store.get_run(id).await?;
    let waiting = match run.state {
        RunState::Queued { .. } | RunState::Running { .. } => {
            let mut w = super::waiting::Waiting::read(state).await;
            w.reason(state, &run).await
        }
        _ => None,
    };
    let layout = &state.layout;
    let now = now_ms();
    Ok(report::build(&*state.store, layout, Place::Server, run, waiting, now).await?)
}

/// The schema of [`RunReport`] (the runtime's type has no utoipa derive).
#[derive(Serialize, ToSchema)]
pub struct Report {
    #[serde(flatten)]
    pub run: schemas::Run,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    /// Milliseconds it ran (or has been running); null before it started.
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    pub total_tokens: u64,
    /// `running 3.2s`, `succeeded (exit 0)`, `paused: approval`, …
    pub status_text: String,
    pub attempts: Vec<ReportAttempt>,
    /// The steps of every attempt, each until the next, its end or its attempt's.
    pub timeline: Vec<Step>,
    /// Each `tool_call` event: `attempt`, `at`, `name`, `ok`, `duration_ms`,
    /// `kind`, `input`, `output`, `bytes`, `truncated`, `approval` (and
    /// `requested_input`, `edited_by` when an approver edited the input).
    #[schema(value_type = Vec<Object>)]
    pub tool_calls: Vec<Value>,
    /// Usage events summed by model.
    #[schema(value_type = Object)]
    pub usage_by_model: Value,
    /// Each `model_call` event's fields with its `seq`, `attempt` and `at`.
    #[schema(value_type = Vec<Object>)]
    pub model_calls: Vec<Value>,
    /// A native agent's conversation as last checkpointed.
    #[schema(value_type = Option<Object>, required = true)]
    pub conversation: Value,
    /// The latest attempt's bill of materials (see `GET /v1/runs/{id}/bom`).
    #[schema(value_type = Option<Object>, required = true)]
    pub bom: Value,
    /// The run's approvals; a workflow's include its members'.
    pub approvals: Vec<schemas::Approval>,
    /// Its dead letter: `run_id`, `at`, `reason`, `attempts`, `checkpoint`, `errors`, `replayed_by`.
    #[schema(value_type = Option<Object>, required = true)]
    pub dead_letter: Value,
    pub artifacts: Vec<schemas::Artifact>,
    /// Its events (at most 10,000).
    pub events: Vec<schemas::Event>,
    /// The API path of its log (`/v1/runs/{id}/logs`).
    pub log_path: String,
    /// Its directory: null from a server (it is not on the client's machine).
    #[schema(value_type = Option<String>, required = true)]
    pub run_dir: Value,
    /// Its parcel's advisory declarations (when the parcel is on the server).
    #[schema(value_type = Object, required = false)]
    pub advisory: Value,
    /// Its parcel's mounts (when the parcel is on the server).
    #[schema(value_type = Object, required = false)]
    pub mounts: Value,
    /// Its workspace as the server's machine sees it: `path`, `keep`,
    /// `exists`, `state`, `kind`.
    #[schema(value_type = Object)]
    pub workspace: Value,
    /// A workflow run's graph (see `GET /v1/runs/{id}/graph`).
    #[schema(required = false)]
    pub workflow: Option<schemas::Graph>,
    /// A service's state (see `GET /v1/runs/{id}/service`).
    #[schema(required = false)]
    pub service: Option<schemas::ServiceState>,
}

/// One attempt with what it used.
#[derive(Serialize, ToSchema)]
pub struct ReportAttempt {
    #[serde(flatten)]
    pub attempt: schemas::Attempt,
    /// Its usage events, summed.
    pub usage: schemas::Usage,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// Its limits and peak memory and CPU time (its `resources` event).
    #[schema(value_type = Option<Object>, required = true)]
    pub resources: Value,
}

/// One step of the timeline.
#[derive(Serialize, ToSchema)]
pub struct Step {
    pub attempt: u32,
    pub name: String,
    pub started_at: i64,
    #[schema(required = true)]
    pub ended_at: Option<i64>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
}
