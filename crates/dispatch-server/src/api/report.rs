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
    /// Each `tool_call` event.
    pub tool_calls: Vec<ToolCall>,
    /// Usage events summed by model.
    #[schema(value_type = Object)]
    pub usage_by_model: Value,
    /// Each `model_call` event's fields with its `seq`, `attempt` and `at`.
    pub model_calls: Vec<ModelCall>,
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
    /// Its limits and peak memory and CPU time (its `resources` event);
    /// null when it has none.
    #[schema(required = true)]
    pub resources: Option<AttemptResources>,
}

/// One `tool_call` event (`dispatch_runtime::report::ToolCall`): its fields
/// are the event's, null when it has none (or one of another type).
#[derive(Serialize, ToSchema)]
pub struct ToolCall {
    pub attempt: u32,
    pub at: i64,
    #[schema(required = true)]
    pub name: Option<String>,
    #[schema(required = true)]
    pub ok: Option<bool>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// `builtin`, `mcp`, `http`, `cli`, `hosted`, …
    #[schema(required = true)]
    pub kind: Option<String>,
    /// The arguments it ran with (the tool's own JSON).
    pub input: Value,
    /// What it answered (usually text).
    pub output: Value,
    #[schema(required = true, minimum = 0)]
    pub bytes: Option<u64>,
    #[schema(required = true)]
    pub truncated: Option<bool>,
    /// The approval it waited for (`id`, `decision`, `by`, `rationale`,
    /// `edited`, as the agent recorded it), or null.
    pub approval: Value,
    /// With an approver's edit: the arguments the model asked for.
    #[schema(required = false)]
    pub requested_input: Option<Value>,
    /// With an approver's edit: who changed the arguments.
    #[schema(required = false, value_type = EditedBy)]
    pub edited_by: Option<EditedBy>,
}

/// Who changed a tool call's arguments before it ran.
#[derive(Serialize, ToSchema)]
pub struct EditedBy {
    pub by: String,
    /// The approval's id.
    pub approval: String,
    pub at: i64,
}

/// One `model_call` event: where and when in the log, then the event's own
/// fields, free-form (they grow with the providers): `model`, `provider`,
/// `base_url`, `call`, `round`, tokens, `cost_usd` (null when the model has
/// no price), `latency_ms`, `first_token_ms`, `finish_reason`, `retry`,
/// `fallback`, `fallback_from`, `estimated`, `truncated`, `error`,
/// `request_sha256`, `response_sha256`, …
#[derive(Serialize, ToSchema)]
pub struct ModelCall {
    pub seq: i64,
    pub attempt: u32,
    pub at: i64,
}

/// An attempt's limits and what it used (its `resources` event).
#[derive(Serialize, ToSchema)]
pub struct AttemptResources {
    pub limits: Vec<ReportLimit>,
    #[schema(required = true, minimum = 0)]
    pub peak_memory_bytes: Option<u64>,
    #[schema(required = true, minimum = 0)]
    pub cpu_time_ms: Option<u64>,
    /// `cgroup v1`, `rusage`, `wasmtime fuel`, …
    #[schema(required = true)]
    pub measured_by: Option<String>,
    /// The fuel a WASM guest burned, when metered.
    #[schema(required = false, minimum = 0, value_type = u64)]
    pub fuel_used: Option<u64>,
}

/// One limit in effect and how it was enforced.
#[derive(Serialize, ToSchema)]
pub struct ReportLimit {
    /// `cpus`, `memory`, `pids`, `disk`, `fuel`.
    pub limit: String,
    /// As declared: `1`, `512M`.
    pub value: String,
    /// `cgroup_v1`, `cgroup_v2`, `container`, `rlimit`, `watch`,
    /// `not_applied`, `wasmtime`.
    pub how: String,
    /// What an approximation leaves out, or why it was not applied.
    #[schema(required = false, value_type = String)]
    pub note: Option<String>,
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
