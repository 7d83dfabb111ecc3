//! One [`RunReport`]: everything about a run, built in one place from the
//! store (any backend) and the event log. `dispatch inspect-run` prints it
//! (locally, and through `--host` from `GET /v1/runs/{id}/report`), the
//! server serves it, and the dashboard's run page draws its timeline, tool
//! and model calls from it — so the three cannot drift apart.
//!
//! It lives here, in the runtime, because it needs what only the runtime
//! knows besides the store: the run's directory and workspace
//! ([`crate::workspace::info`]), its parcel's declarations on disk and the
//! workflow graph ([`crate::workflow::graph`]); the CLI and the server both
//! depend on this crate.

pub mod parts;
pub mod telemetry;

use std::collections::BTreeMap;

use dispatch_core::concurrency::RunConcurrency;
use dispatch_core::parcel_meta::{Advisory, Mounts};
use dispatch_core::time::human_duration;
use dispatch_core::{RunState, Status, Ts};
use dispatch_store::{
    Approval, Artifact, DeadLetter, Event, ReliabilityStore, Run, ServiceStore, Store,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::workspace::WorkspaceInfo;
pub use parts::{AttemptResources, EditedBy, ModelCall, ReportLimit, ServiceReport, ToolCall};
pub use telemetry::{ModelUsage, ReportAttempt, Step};

/// At most this many events are read into a report.
pub const MAX_EVENTS: usize = 10_000;

/// Where the report is built, which decides the fields that name places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the machine of the local runtime: `log_path` and `run_dir` are
    /// its files.
    Local,
    /// On a server, for a client elsewhere: `log_path` is the API path of
    /// the log (`/v1/runs/{id}/logs`) and `run_dir` is `null` (not on the
    /// client's machine).
    Server,
}

/// Everything about one run: the stored run with its derived fields, then
/// its attempts, event-derived telemetry, approvals, artifacts and events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub run: Run,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub total_tokens: u64,
    /// `running 3.2s`, `succeeded (exit 0)`, …, as of when it was built.
    pub status_text: String,
    /// Why a queued run waits (a server says, see `GET /v1/runs`; locally,
    /// its project's quota, see `crate::waiting`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub attempts: Vec<ReportAttempt>,
    /// The steps, with durations.
    pub timeline: Vec<Step>,
    pub tool_calls: Vec<ToolCall>,
    pub usage_by_model: BTreeMap<String, ModelUsage>,
    pub model_calls: Vec<ModelCall>,
    /// A native agent's conversation as last checkpointed (`system`,
    /// `messages`, `rounds`, `calls`), or null. Free-form: the messages
    /// are the provider-neutral ones the agent keeps, whatever they hold.
    pub conversation: Value,
    /// The latest attempt's bill of materials (its `bom` event with its
    /// `attempt`), or null. Free-form: what the courier recorded.
    pub bom: Value,
    /// A workflow's approvals are its members' too.
    pub approvals: Vec<Approval>,
    pub dead_letter: Option<DeadLetter>,
    pub artifacts: Vec<Artifact>,
    pub events: Vec<Event>,
    /// A local file, or on a server the API path of the log.
    pub log_path: String,
    /// The run's directory; `null` from a server.
    pub run_dir: Option<String>,
    pub concurrency: Option<RunConcurrency>,
    /// What the parcel declares without changing how it runs (upstream
    /// Dispatch's VISIBILITY, ROUTING, FRAMEWORK, COMPACTION); absent when
    /// the parcel is not on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advisory: Option<Advisory>,
    /// Its state mounts; absent when the parcel is not on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Mounts>,
    /// The workspace as this machine sees it.
    pub workspace: WorkspaceInfo,
    /// A workflow run's communication graph (`workflow`, `name`, `nodes`,
    /// `edges`, `messages`), as [`crate::workflow::graph::graph`] builds it
    /// for `GET /v1/runs/{id}/graph` and the DOT and Mermaid drawings too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Value>,
    /// A service's stored state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReport>,
}

/// The report of `run`, read from `store`; `layout` is this machine's
/// state directory, `waiting` why a queued run waits (when known), `now`
/// ends what is still going.
pub async fn build<S: Store + ServiceStore + ?Sized>(
    store: &S,
    layout: &Layout,
    place: Place,
    run: Run,
    waiting: Option<String>,
    now: Ts,
) -> RuntimeResult<RunReport> {
    let id = run.id.clone();
    let attempts = store.list_attempts(&id).await?;
    let events = store.list_events(&id, 0, MAX_EVENTS).await?;
    let t = telemetry::build(&events, &attempts);
    let extras = store.run_extras(&id).await?;
    let parcel = dispatch_core::parcel::load(&layout.parcels().join(&run.parcel_digest)).ok();
    let workspace =
        crate::workspace::info(layout, &id, extras.keep_workspace, run.state.is_terminal());
    let workflow = crate::workflow::graph::graph(store, &run).await?;
    let approvals = approvals(store, &run, workflow.as_ref()).await?;
    let service = store
        .get_service_state(&id)
        .await?
        .and_then(|s| ServiceReport::of(&s));
    let (log_path, run_dir) = match place {
        Place::Local => (
            layout.log(&id).to_string_lossy().into_owned(),
            Some(layout.run_dir(&id).to_string_lossy().into_owned()),
        ),
        Place::Server => (format!("/v1/runs/{id}/logs"), None),
    };
    Ok(RunReport {
        status: run.status(),
        exit_code: run.state.exit_code(),
        duration_ms: duration_ms(&run.state, now),
        total_tokens: run.usage.total_tokens(),
        status_text: status_text(&run.state, now),
        waiting,
        attempts: t.attempts,
        timeline: t.timeline,
        tool_calls: t.tool_calls,
        usage_by_model: t.usage_by_model,
        model_calls: telemetry::model_calls(&events),
        conversation: telemetry::conversation(&events),
        bom: telemetry::bom(&events),
        approvals,
        dead_letter: store.dead_letter(&id).await?,
        artifacts: store.list_artifacts(&id).await?,
        events,
        log_path,
        run_dir,
        concurrency: extras.concurrency,
        advisory: parcel.as_ref().map(|p| p.manifest.advisory.clone()),
        mounts: parcel.as_ref().map(|p| p.manifest.mounts.clone()),
        workspace,
        workflow,
        service,
        run,
    })
}

/// The run's approvals; a workflow's are its members' too (listed with the parent).
async fn approvals<S: ReliabilityStore + ?Sized>(
    store: &S,
    run: &Run,
    workflow: Option<&Value>,
) -> RuntimeResult<Vec<Approval>> {
    let mut approvals = store.list_approvals(Some(&run.id), false).await?;
    let nodes = workflow.and_then(|g| g["nodes"].as_array());
    for node in nodes.into_iter().flatten() {
        for r in node["runs"].as_array().into_iter().flatten() {
            if let Some(child) = r["id"].as_str().and_then(|c| c.parse().ok()) {
                approvals.extend(store.list_approvals(Some(&child), false).await?);
            }
        }
    }
    Ok(approvals)
}

/// `running 3.2s`, `succeeded (exit 0)`, `failed (exit 3)`, `queued`.
pub fn status_text(state: &RunState, now: Ts) -> String {
    match state {
        RunState::Running { started_at, .. } => {
            format!("running {}", human_duration(now - started_at))
        }
        RunState::Paused { reason, .. } => format!("paused: {reason}"),
        RunState::Review { reason, .. } => format!("review: {reason}"),
        RunState::Suspended { reason, .. } => format!("paused: {reason} (suspended)"),
        RunState::Queued {
            not_before: Some(t),
        } if *t > now => format!("queued (retry in {})", human_duration(t - now)),
        s if s.is_terminal() => {
            let base = match s.exit_code() {
                Some(code) => format!("{} (exit {code})", s.status()),
                None => s.status().to_string(),
            };
            // A budget stop says so where runs are listed.
            match s.reason().filter(|r| r.starts_with("budget_exceeded")) {
                Some(_) => format!("{base} budget_exceeded"),
                None => base,
            }
        }
        s => s.status().to_string(),
    }
}

/// How long the run ran (or has been running).
pub fn duration_ms(state: &RunState, now: Ts) -> Option<i64> {
    let start = state.started_at()?;
    Some(state.ended_at().unwrap_or(now) - start)
}
