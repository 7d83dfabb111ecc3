//! Evals: `dispatch eval --host` runs its cases as runs on the cluster and
//! keeps its report here; `GET /v1/evals/{id}` shows it, and
//! `GET /v1/evals/latest?parcel=` finds the newest eval of a parcel (for
//! `--baseline <digest>`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use dispatch_store::EvalRecord;
use serde_json::Value;

use super::runs::{Params, params};
use super::{ApiError, ApiResult, AppState, codes};
use super::{schemas, wire_runs};

/// The fields every stored report has (the rest is kept as sent).
fn record_of(report: Value) -> ApiResult<EvalRecord> {
    let text = |k: &str| {
        report
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the eval report has no string `{k}` (hint: send what `dispatch eval --format json` prints)"
                ))
            })
    };
    let id = text("eval")?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError::bad_request(format!(
            "eval id `{id}` is not an id (hint: letters, digits and dashes, at most 64)"
        )));
    }
    let parcel_digest = text("parcel")?;
    let parcel_name = text("parcel_name")?;
    let created_at = report
        .get("created_at")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("the eval report has no integer `created_at`"))?;
    if !report.get("results").is_some_and(Value::is_array) {
        return Err(ApiError::bad_request(
            "the eval report has no `results` list",
        ));
    }
    Ok(EvalRecord {
        id,
        parcel_digest,
        parcel_name,
        created_at,
        report,
    })
}

/// Keeps an eval's report.
#[utoipa::path(
    post,
    path = "/v1/evals",
    operation_id = "createEval",
    tag = "evals",
    summary = "Keep an eval's report",
    request_body(content = schemas::EvalReport, description = "the report `dispatch eval --format json` prints"),
    responses(
        (status = 201, description = "kept", body = schemas::EvalKept),
        (status = 400, description = "`bad_request`: not an eval report", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 409, description = "`conflict`: an eval with that id is kept already (the first stays)", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<schemas::EvalKept>)> {
    let report: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let record = record_of(report)?;
    if !state.store.put_eval(&record).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::CONFLICT,
            format!("eval {} is kept already; the first report stays", record.id),
        ));
    }
    end_eval_run(&state, &record).await?;
    Ok((
        StatusCode::CREATED,
        Json(schemas::EvalKept {
            eval: record.id.clone(),
        }),
    ))
}

/// The eval's run (`dispatch eval --host` creates it `created`, labeled
/// `eval-run`, with the eval's id) ends with the report's verdict: its
/// output the summary, its usage the cases' together. A report of an eval
/// with no such run (an older client) is only kept.
async fn end_eval_run(state: &AppState, record: &EvalRecord) -> ApiResult<()> {
    let Ok(id) = record.id.parse::<dispatch_core::RunId>() else {
        return Ok(());
    };
    let mut run = match state.store.get_run(&id).await {
        Ok(run) => run,
        Err(dispatch_store::StoreError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if run.state.is_terminal()
        || !run
            .labels
            .iter()
            .any(|l| l == dispatch_runtime::group::EVAL_RUN_LABEL)
    {
        return Ok(());
    }
    let (end, output) = dispatch_runtime::group::eval_end(&record.report);
    let used = dispatch_runtime::group::eval_usage(&record.report);
    dispatch_runtime::group::close(&*state.store, &mut run, end, Some(output), used).await?;
    Ok(())
}

/// One eval's report, by id or a unique prefix of it.
#[utoipa::path(
    get,
    path = "/v1/evals/{id}",
    operation_id = "getEval",
    tag = "evals",
    summary = "An eval's report",
    params(("id" = String, Path, description = "the eval id, or a unique prefix of it")),
    responses(
        (status = 200, description = "the report", body = schemas::EvalReport),
        (status = 400, description = "`ambiguous_id`: several evals start with it", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`eval_not_found`", body = schemas::Error),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<schemas::EvalReport>> {
    let mut found = state.store.evals_with_prefix(&id, 2).await?;
    let at = match found.as_slice() {
        [_] => 0,
        [first, ..] if first.id == id => 0,
        [] => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                codes::EVAL_NOT_FOUND,
                format!("no eval matches `{id}`"),
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::AMBIGUOUS_ID,
                format!("`{id}` matches several evals; give more characters of the id"),
            ));
        }
    };
    Ok(Json(wire_runs::eval_report(found.swap_remove(at))))
}

/// The newest eval of a parcel.
#[utoipa::path(
    get,
    path = "/v1/evals/latest",
    operation_id = "latestEval",
    tag = "evals",
    summary = "The newest eval of a parcel",
    params(("parcel" = String, Query, description = "the parcel's digest, or a prefix of it (`sha256:` optional)")),
    responses(
        (status = 200, description = "the report", body = schemas::EvalReport),
        (status = 400, description = "`bad_request`: no `parcel`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`eval_not_found`: no eval of that parcel", body = schemas::Error),
    )
)]
pub async fn latest(
    State(state): State<AppState>,
    query: Params,
) -> ApiResult<Json<schemas::EvalReport>> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["parcel"])?;
    let parcel = params
        .get("parcel")
        .map(|p| p.strip_prefix("sha256:").unwrap_or(p))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("give ?parcel=<digest> (hint: a prefix of the digest will do)")
        })?;
    match state.store.latest_eval_of(parcel).await? {
        Some(e) => Ok(Json(wire_runs::eval_report(e))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::EVAL_NOT_FOUND,
            format!("no eval of a parcel whose digest starts with `{parcel}`"),
        )),
    }
}
