//! `GET /v1/quotas`, `PUT /v1/quotas/{project}`, `DELETE
//! /v1/quotas/{project}`: quotas per project (`dispatch quota --host`),
//! each limit with what is used of it now. Reading needs `read` (a token
//! bound to projects sees its projects' quotas); setting and removing need
//! `admin` on a token bound to no project: a project's own admin does not
//! raise its own budget.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use dispatch_core::now_ms;
use dispatch_core::quota::{QuotaLimit, parse_quotas};
use serde_json::Value;
use utoipa::IntoParams;

use super::runs::{Params, only_known, params};
use super::{ApiError, ApiResult, AppState, schemas, wire_ops};

/// `GET /v1/quotas` query string.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct QuotaParams {
    /// Only this project's quota; the token must be bound to it (default:
    /// every project the token may see).
    pub project: Option<String>,
}

/// `DELETE /v1/quotas/{project}` query string.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RemoveParams {
    /// Only this limit (`max_live_runs`, `tokens_per_day`, …); default: all.
    pub limit: Option<String>,
}

/// Quotas with what is used of each now.
#[utoipa::path(
    get,
    path = "/v1/quotas",
    operation_id = "listQuotas",
    tag = "operations",
    summary = "Quotas per project: max live runs, tokens and USD per day and month, with what is used of each now",
    params(QuotaParams),
    responses(
        (status = 200, description = "the quotas", body = schemas::QuotaList),
        (status = 400, description = "`bad_request`: a bad project name", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is not bound to `project`", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Params,
) -> ApiResult<Json<schemas::QuotaList>> {
    let params = params(query)?;
    only_known(params.keys(), &["project"])?;
    let projects =
        crate::auth::visible(token.as_deref(), params.get("project").map(String::as_str))?;
    let quotas = state.store.quota_use(&projects, now_ms()).await?;
    let quotas = quotas.into_iter().map(wire_ops::quota).collect();
    Ok(Json(schemas::QuotaList { quotas }))
}

/// Sets limits of a project's quota; a raise lets waiting runs go at once.
#[utoipa::path(
    put,
    path = "/v1/quotas/{project}",
    operation_id = "setQuota",
    tag = "operations",
    summary = "Set limits of a project's quota (each given replaces that limit; the others stay)",
    params(("project" = String, Path, description = "the project")),
    request_body = dispatch_api::QuotaBody,
    responses(
        (status = 200, description = "the project's quota as it is now, and the runs it resumed", body = schemas::QuotaSet),
        (status = 400, description = "`bad_request`: a bad project, limit, value, soft mark or action", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: needs `admin` on a token bound to no project", body = schemas::Error),
    )
)]
pub async fn set(
    State(state): State<AppState>,
    Path(project): Path<String>,
    body: Bytes,
) -> ApiResult<Json<schemas::QuotaSet>> {
    // The body is a `dispatch_api::QuotaBody` (the CLI sends one), read
    // field by field for the one-line errors: an unknown key is a bad limit
    // name, a value a number or a string.
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad quota: {e} (hint: {{\"max_live_runs\": 10, \"tokens_per_day\": \"2M\", \"soft\": \"80%\", \"on_hard\": \"wait\"}})"
        ))
    })?;
    let Some(fields) = body.as_object() else {
        return Err(ApiError::bad_request(
            "bad quota: the body is a JSON object (hint: {\"usd_per_month\": 500})",
        ));
    };
    let text = |key: &str, v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        _ => Err(ApiError::bad_request(format!(
            "{key}: a number or a string such as \"2M\""
        ))),
    };
    let mut values = Vec::new();
    let (mut soft, mut on_hard) = (None, None);
    for (key, v) in fields {
        match key.as_str() {
            "soft" => soft = Some(text(key, v)?),
            "on_hard" => on_hard = Some(text(key, v)?),
            _ => {
                let limit = QuotaLimit::parse(key).map_err(ApiError::bad_request)?;
                values.push((limit, text(key, v)?));
            }
        }
    }
    let quotas = parse_quotas(
        &project,
        &values,
        soft.as_deref(),
        on_hard.as_deref(),
        now_ms(),
    )
    .map_err(ApiError::bad_request)?;
    state.store.set_quotas(&quotas).await?;
    let woken = dispatch_runtime::suspend::quota_changed(&*state.store, &project).await?;
    let now = state.store.quota_use(&[project], now_ms()).await?;
    Ok(Json(schemas::QuotaSet {
        quotas: now.into_iter().map(wire_ops::quota).collect(),
        resumed: woken.len() as u64,
    }))
}

/// Removes a project's quota, or one of its limits.
#[utoipa::path(
    delete,
    path = "/v1/quotas/{project}",
    operation_id = "removeQuota",
    tag = "operations",
    summary = "Remove a project's quota, or one of its limits (`?limit=`)",
    params(("project" = String, Path, description = "the project"), RemoveParams),
    responses(
        (status = 200, description = "how many limits were removed, and how many waiting runs that resumed", body = schemas::QuotaRemoved),
        (status = 400, description = "`bad_request`: a bad project or limit name", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: needs `admin` on a token bound to no project", body = schemas::Error),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(project): Path<String>,
    query: Params,
) -> ApiResult<Json<schemas::QuotaRemoved>> {
    let params = params(query)?;
    only_known(params.keys(), &["limit"])?;
    dispatch_core::project::check_project(&project).map_err(ApiError::bad_request)?;
    let limit = params
        .get("limit")
        .map(|l| QuotaLimit::parse(l))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let removed = state.store.remove_quotas(&project, limit).await?;
    let woken = dispatch_runtime::suspend::quota_changed(&*state.store, &project).await?;
    Ok(Json(schemas::QuotaRemoved {
        removed,
        resumed: woken.len() as u64,
    }))
}
