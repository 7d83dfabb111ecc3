//! `GET /v1/notifications`: the cluster's notification outbox, newest
//! first, with what became of each message (`dispatch notify ls --host`).
//! The outbox spans every project, so a token bound to projects is refused
//! (as a prune is); reading needs `read`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::runs::{Params, bounded, only_known, params};
use super::{ApiError, ApiResult, AppState, codes, schemas};

/// The page size when `limit` is not given, and the largest allowed.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// `GET /v1/notifications` query string.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NotificationParams {
    /// How many, newest first (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One message of the outbox.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct NotificationRow {
    pub seq: i64,
    /// What makes it unique (a run, a kind, an approval or a mark).
    pub key: String,
    pub run_id: String,
    /// `approval.requested`, `approval.escalated`, `run.failed`, `budget.threshold`, `quota.soft`, `quota.hard`, `review.expired`
    pub kind: String,
    /// What the message says (kind-specific).
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: i64,
    /// When it is next tried.
    pub due_at: i64,
    /// Delivery rounds so far.
    pub tries: u32,
    /// The channels that have it.
    pub sent: Vec<String>,
    pub last_error: Option<String>,
    /// `delivered`, `failed` (given up) or `skipped` once settled; absent while pending.
    pub outcome: Option<String>,
    pub done_at: Option<i64>,
}

/// The outbox.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct NotificationList {
    /// Newest first.
    pub notifications: Vec<NotificationRow>,
}

#[utoipa::path(
    get,
    path = "/v1/notifications",
    operation_id = "listNotifications",
    tag = "operations",
    summary = "The notification outbox, newest first, with what became of each message",
    params(NotificationParams),
    responses(
        (status = 200, description = "the outbox", body = NotificationList),
        (status = 400, description = "`bad_request`: a bad `limit`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is bound to projects (the outbox spans every project)", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Params,
) -> ApiResult<Json<Value>> {
    let params = params(query)?;
    only_known(params.keys(), &["limit"])?;
    if let Some(record) = token.as_deref().filter(|t| !t.projects.is_empty()) {
        let bound: Vec<&str> = record.projects.iter().map(|p| p.project.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            format!(
                "token {} may not read the notification outbox: it is bound to projects ({}) and the outbox spans every project (hint: a token bound to no project: `dispatch token create --scope read`)",
                record.name,
                bound.join(", ")
            ),
        ));
    }
    let limit = bounded(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let list = state.store.list_notifications(limit).await?;
    Ok(Json(json!({ "notifications": list })))
}
