//! The parts of a run as the API's answers — its attempts, artifacts,
//! bills of materials, workflow graph, dead letter and event stream — and
//! the eval reports, as `dispatch-api` types built from the store's records
//! (the run itself, its events and approvals: `wire.rs`). Each keeps the
//! bytes the answer had when it was the record serialized as JSON: keys in
//! name order (a streamed event's in the record's order), `null` where a
//! value is missing.

use axum::http::StatusCode;
use dispatch_runtime::native::TextDelta;
use dispatch_store::{Event, Run};
use serde_json::Value;

use super::{ApiError, ApiResult, AppState, codes};

/// One try of a run, as `GET /v1/runs/{id}/attempts` lists it.
pub(crate) fn attempt(a: &dispatch_store::Attempt) -> dispatch_api::Attempt {
    dispatch_api::Attempt {
        ended_at: a.ended_at,
        error: a.error.clone(),
        exit_code: a.exit_code,
        number: a.number,
        started_at: a.started_at,
        status: a.status,
        worker: a.worker.clone(),
    }
}

/// A stored artifact, as `GET /v1/runs/{id}/artifacts` lists it.
pub(crate) fn artifact(a: &dispatch_store::Artifact) -> dispatch_api::Artifact {
    dispatch_api::Artifact {
        name: a.name.clone(),
        sha256: a.sha256.clone(),
        size: a.size,
    }
}

/// A dead letter with its run's project, parcel, operation, input and
/// status, as `GET /v1/dead-letters` lists it (and `dispatch dlq ls`
/// locally).
pub fn dead_letter(letter: dispatch_store::DeadLetter, run: &Run) -> dispatch_api::DeadLetter {
    dispatch_api::DeadLetter {
        at: letter.at,
        attempts: letter.attempts,
        checkpoint: letter.checkpoint,
        errors: letter.errors,
        input: run.payload.clone(),
        operation: run.operation,
        parcel_digest: run.parcel_digest.clone(),
        parcel_name: run.parcel_name.clone(),
        project: run.project.clone(),
        reason: letter.reason,
        replayed_by: letter.replayed_by.as_ref().map(ToString::to_string),
        run_id: letter.run_id.to_string(),
        status: run.status(),
    }
}

/// An attempt's bill of materials, from its `bom` event.
pub(crate) fn bom_attempt(e: Event) -> dispatch_api::BomAttempt {
    dispatch_api::BomAttempt {
        at: e.event.at,
        attempt: e.event.attempt,
        bom: e.event.data,
    }
}

/// The communication graph of workflow run `run`, as
/// `GET /v1/runs/{id}/graph` answers it: empty for a run that sent no
/// messages. The runtime builds it as JSON (the CLI renders that locally
/// as DOT and Mermaid); here it is read as the API's type, which names
/// every field it has.
pub(crate) async fn graph(state: &AppState, run: &Run) -> ApiResult<dispatch_api::Graph> {
    Ok(workflow_graph(state, run)
        .await?
        .unwrap_or_else(|| dispatch_api::Graph {
            edges: Vec::new(),
            messages: Vec::new(),
            name: run.parcel_name.clone(),
            nodes: Vec::new(),
            workflow: run.id.to_string(),
        }))
}

/// The communication graph of workflow run `run`; `None` when it sent no
/// messages (the dashboard's workflow page says so).
pub(crate) async fn workflow_graph(
    state: &AppState,
    run: &Run,
) -> ApiResult<Option<dispatch_api::Graph>> {
    dispatch_runtime::workflow::graph::graph(&*state.store, run)
        .await?
        .map(typed_graph)
        .transpose()
}

/// The runtime's graph as the API's type; a mismatch is the server's own
/// fault (the two describe one shape), so it is a 500 that says where.
fn typed_graph(found: Value) -> ApiResult<dispatch_api::Graph> {
    serde_json::from_value(found).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            format!("the workflow graph does not have the API's shape: {e}"),
        )
    })
}

/// A kept eval's report, as `GET /v1/evals/{id}` and `GET /v1/evals/latest`
/// answer it: the report as sent, its id, parcel and start read from the
/// record (which were read from it when it was kept).
pub(crate) fn eval_report(record: dispatch_store::EvalRecord) -> dispatch_api::EvalReport {
    let mut other = match record.report {
        Value::Object(map) => map,
        // Only objects are kept (`POST /v1/evals` reads its fields).
        _ => serde_json::Map::new(),
    };
    for key in ["created_at", "eval", "parcel", "parcel_name"] {
        other.remove(key);
    }
    let results = match other.remove("results") {
        Some(Value::Array(results)) => results,
        _ => Vec::new(),
    };
    dispatch_api::EvalReport {
        created_at: record.created_at,
        eval: record.id,
        parcel: record.parcel_digest,
        parcel_name: record.parcel_name,
        results,
        summary: other.remove("summary"),
        other,
    }
}

/// A stored event as a run's event stream sends it (the SSE `data`).
pub(crate) fn stream_event(e: &Event) -> dispatch_api::StreamEvent {
    dispatch_api::StreamEvent {
        seq: e.seq,
        run_id: e.run_id.to_string(),
        kind: e.event.kind.clone(),
        attempt: e.event.attempt,
        at: e.event.at,
        data: e.event.data.clone(),
    }
}

/// Text a native agent generated, as a run's event stream sends it.
pub(crate) fn stream_delta(d: TextDelta) -> dispatch_api::StreamDelta {
    dispatch_api::StreamDelta {
        attempt: d.attempt,
        run_id: d.run_id.to_string(),
        text: d.text,
    }
}
