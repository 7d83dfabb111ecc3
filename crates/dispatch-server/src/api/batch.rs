//! `POST /v1/runs/batch`: up to [`MAX_BATCH`] runs in one request, each as
//! `POST /v1/runs` takes it, checked one by one (a 400 names the index) and
//! stored in one transaction: all or none. Idempotency keys are honoured,
//! across the batch too (a key seen earlier in it answers that run).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dispatch_store::{BatchItem, Created};
use serde_json::Value;

use super::create::{after_enqueue, check_payload, prepare, traceparent_of};
use super::wire;
use super::{ApiError, ApiResult, AppState};
use dispatch_api::CreateRun;

/// The most runs one batch takes.
pub const MAX_BATCH: usize = 1000;

/// The largest batch body: 1,000 runs of up to 32 KiB each.
pub const MAX_BATCH_BODY: usize = 32 << 20;

fn at(i: usize, mut e: ApiError) -> ApiError {
    e.message = format!("runs[{i}]: {}", e.message);
    e
}

#[utoipa::path(
    post,
    path = "/v1/runs/batch",
    operation_id = "createRuns",
    tag = "runs",
    summary = "Create up to 1,000 runs in one request, all or none",
    description = "The body is `{\"runs\": [...]}`, each item a `createRun` body. Every item is checked first (a 400 names its index); then all are stored in one transaction. An item whose idempotency key matches a run (or an earlier item) answers that run, with `deduplicated: true`.",
    params(super::schemas::CreateRunHeaders),
    request_body = super::schemas::CreateRuns,
    responses(
        (status = 201, description = "every run, in the order asked", body = super::schemas::CreatedRuns),
        (status = 400, description = "`bad_request`: a bad body or item (its index named), more than 1,000 runs, or none; `missing_secret`, `ambiguous_id` as for createRun", body = super::schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = super::schemas::Error),
        (status = 403, description = "`forbidden`: the server's policy denies an item (its index named); `cross_origin`: sent by a page of another origin", body = super::schemas::Error),
        (status = 404, description = "`parcel_not_found` or `run_not_found` for an item (its index named)", body = super::schemas::Error),
        (status = 409, description = "`session_busy`: a live run holds an item's session", body = super::schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 32 MiB", body = super::schemas::Error),
        (status = 503, description = "`unavailable`: the database stayed out of reach; nothing was created (retry after `Retry-After`)", body = super::schemas::Error),
    )
)]
pub async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    body: Bytes,
) -> ApiResult<Response> {
    let who = super::policy::who(token.as_deref());
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad batch: {e}")))?;
    let Some(items) = value.get("runs").and_then(Value::as_array) else {
        return Err(ApiError::bad_request(
            "bad batch: the body is {\"runs\": [...]}, each item a POST /v1/runs body",
        ));
    };
    if let Some(extra) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "runs"))
    {
        return Err(ApiError::bad_request(format!(
            "bad batch: unknown field `{extra}` (the body is {{\"runs\": [...]}})"
        )));
    }
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch takes 1 to {MAX_BATCH} runs, not {} (hint: split it)",
            items.len()
        )));
    }
    let traceparent = traceparent_of(&headers)?;
    let patience = state.patience();
    let mut batch = Vec::with_capacity(items.len());
    let mut briefs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut parcels = super::create::Parcels::new();
    for (i, item) in items.iter().enumerate() {
        check_payload(item).map_err(|e| at(i, e))?;
        let req: CreateRun = serde_json::from_value(item.clone())
            .map_err(|e| at(i, ApiError::bad_request(format!("bad run request: {e}"))))?;
        if req.start == Some(false) {
            return Err(at(
                i,
                ApiError::bad_request("a batch starts its runs (hint: leave `start` out)"),
            ));
        }
        let p = prepare(
            &state,
            &patience,
            req,
            traceparent.clone(),
            (&who, token.as_deref()),
            &mut parcels,
        )
        .await
        .map_err(|e| at(i, e))?;
        if seen.insert(p.brief.0.clone()) {
            briefs.push(p.brief);
        }
        batch.push(BatchItem {
            new: p.new,
            extras: p.extras,
            options: p.options,
            dedupe: p.dedupe,
        });
    }
    // A try whose answer was lost with the connection may have committed:
    // the next finds the batch's first run (ids are chosen before the first
    // try) and answers what that try stored.
    let tried = std::sync::atomic::AtomicBool::new(false);
    let created = patience
        .retry(|| async {
            if tried.swap(true, std::sync::atomic::Ordering::Relaxed)
                && let Ok(_) = state.store.get_run(&batch[0].new.id).await
            {
                let mut stored = Vec::with_capacity(batch.len());
                for i in &batch {
                    stored.push(match state.store.get_run(&i.new.id).await {
                        Ok(run) => Created::New(run),
                        // Not inserted: that try found its key's run.
                        Err(dispatch_store::StoreError::NotFound(_)) => {
                            let s = &state.store;
                            s.enqueue_with(&i.new, &i.extras, &i.options, i.dedupe)
                                .await?
                        }
                        Err(e) => return Err(e.into()),
                    });
                }
                return Ok(stored);
            }
            Ok(state.store.enqueue_batch(&batch, &briefs).await?)
        })
        .await?;
    let mut runs = Vec::with_capacity(created.len());
    for (c, item) in created.iter().zip(&batch) {
        let (run, deduplicated) = match c {
            Created::New(run) => (run, false),
            Created::Existing(run) => (run, true),
        };
        if !deduplicated {
            after_enqueue(&state, &patience, run, &item.options).await?;
        }
        let mut doc = wire::run(run);
        doc.deduplicated = Some(deduplicated);
        runs.push(doc);
    }
    let answer = dispatch_api::CreatedRuns { runs };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
