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
