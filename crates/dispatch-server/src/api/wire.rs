//! The store's records as the API's answers: `dispatch-api` types built
//! from `dispatch-store` ones (`dispatch-api` depends on `dispatch-core`
//! only, so the conversions live here, on the server's side).

use dispatch_core::concurrency::RunConcurrency;
use dispatch_store::Run;
use serde_json::Value;

/// A run as the API shows it: the stored record (less its fence) plus its
/// status; the answers that show more (`concurrency`, `deduplicated`,
/// `waiting`) fill those in.
pub(crate) fn run(run: &Run) -> dispatch_api::Run {
    dispatch_api::Run {
        attempt: run.attempt,
        brief_sha256: run.brief_sha256.clone(),
        concurrency: None,
        created_at: run.created_at,
        deduplicated: None,
        id: run.id.to_string(),
        labels: run.labels.clone(),
        operation: run.operation,
        origin_id: run.origin_id.as_ref().map(ToString::to_string),
        output: run.output.clone(),
        parcel_digest: run.parcel_digest.clone(),
        parcel_name: run.parcel_name.clone(),
        parent_id: run.parent_id.as_ref().map(ToString::to_string),
        payload: run.payload.clone(),
        project: run.project.clone(),
        // A state has only string keys, which JSON always holds.
        state: serde_json::to_value(&run.state).unwrap_or(Value::Null),
        status: run.status(),
        stop_requested_at: run.stop_requested_at,
        trigger: run.trigger.to_string(),
        updated_at: run.updated_at,
        usage: dispatch_api::Usage {
            cost_usd: run.usage.cost_usd,
            input_tokens: run.usage.input_tokens,
            output_tokens: run.usage.output_tokens,
        },
        version: run.version,
        waiting: None,
    }
}

/// A run's concurrency key as `GET /v1/runs/{id}` shows it.
pub(crate) fn concurrency(c: RunConcurrency) -> dispatch_api::Concurrency {
    dispatch_api::Concurrency {
        key: c.key,
        max: c.max,
        strategy: c.strategy.as_str().to_string(),
    }
}

/// A stored event as `GET /v1/runs/{id}/events?format=json` lists it.
pub(crate) fn event(e: &dispatch_store::Event) -> dispatch_api::Event {
    dispatch_api::Event {
        at: e.event.at,
        attempt: e.event.attempt,
        data: e.event.data.clone(),
        run_id: e.run_id.to_string(),
        seq: e.seq,
        kind: e.event.kind.clone(),
    }
}

/// An approval; `project` is its run's, in listings.
pub(crate) fn approval(
    a: dispatch_store::Approval,
    project: Option<String>,
) -> dispatch_api::Approval {
    dispatch_api::Approval {
        attempt: a.attempt,
        decided_at: a.decided_at,
        decided_by: a.decided_by,
        decision: a.decision,
        deadline: a.deadline,
        details: a.details,
        id: a.id,
        input: a.input,
        project,
        rationale: a.rationale,
        requested_at: a.requested_at,
        run_id: a.run_id.to_string(),
        summary: a.summary,
    }
}
