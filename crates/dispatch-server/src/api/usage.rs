//! `GET /v1/usage?by=&since=&until=`: the cost report (`dispatch usage
//! --host`): calls, tokens and USD billed in a period, summed by parcel,
//! model, label or UTC day, with the period's total. Read from the runs'
//! `usage` events through [`dispatch_store::UsageStore`].

use axum::Json;
use axum::extract::State;
use dispatch_core::now_ms;
use dispatch_core::time::format_rfc3339;
use dispatch_store::{UsageBy, UsageQuery};
use utoipa::IntoParams;

use super::runs::{Params, only_known, params, time};
use super::schemas;
use super::{ApiError, ApiResult, AppState, wire_ops};

/// The period when `since` is not given: the last 30 days.
const DEFAULT_DAYS: i64 = 30;

/// `GET /v1/usage` query string.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UsageParams {
    /// What the rows are: `parcel` (default), `model`, `label` (a run counts
    /// under each of its labels; one without any under `(none)`) or `day`
    /// (UTC, `YYYY-MM-DD`) or `project`.
    pub by: Option<String>,
    /// The period's start: RFC 3339 or an age before now (`30d`, `12h`);
    /// default 30 days ago.
    pub since: Option<String>,
    /// The period's end (exclusive), in the same forms; default now.
    pub until: Option<String>,
    /// Only this project's runs; the token must be bound to it (default:
    /// every project the token may see).
    pub project: Option<String>,
}

/// Spend in a period, by parcel, model, label or day.
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "getUsage",
    tag = "operations",
    summary = "The cost report: calls, tokens and USD billed in a period, by parcel, model, label or day",
    params(UsageParams),
    responses(
        (status = 200, description = "the report", body = schemas::UsageReport),
        (status = 400, description = "`bad_request`: an unknown `by`, a bad time, or an empty period", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is not bound to `project`", body = schemas::Error),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Params,
) -> ApiResult<Json<schemas::UsageReport>> {
    let params = params(query)?;
    only_known(params.keys(), &["by", "since", "until", "project"])?;
    let projects =
        crate::auth::visible(token.as_deref(), params.get("project").map(String::as_str))?;
    let by = match params.get("by").map(String::as_str) {
        None | Some("") => UsageBy::Parcel,
        Some(b) => UsageBy::parse(b).ok_or_else(|| {
            ApiError::bad_request(format!(
                "by: `{}` is not a grouping (expected parcel, model, label, day or project)",
                dispatch_core::event::shorten(b, 40)
            ))
        })?,
    };
    let now = now_ms();
    let since = time(&params, "since", now)?.unwrap_or(now - DEFAULT_DAYS * 24 * 3600 * 1000);
    let until = time(&params, "until", now)?.unwrap_or(now);
    if until <= since {
        return Err(ApiError::bad_request(
            "since is not before until: the period is empty",
        ));
    }
    let q = UsageQuery {
        by,
        since: Some(since),
        until: Some(until),
        projects,
    };
    let report = dispatch_store::usage_report(&*state.store, &q).await?;
    Ok(Json(schemas::UsageReport {
        by: by.as_str().to_string(),
        rows: report.rows.into_iter().map(wire_ops::usage_row).collect(),
        since: format_rfc3339(since).unwrap_or_default(),
        total: wire_ops::usage_row(report.total),
        until: format_rfc3339(until).unwrap_or_default(),
    }))
}
