//! `GET /v1/notifications`: the cluster's notification outbox, newest
//! first, with what became of each message (`dispatch notify ls --host`).
//! The outbox spans every project, so a token bound to projects is refused
//! (as a prune is); reading needs `read`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa::IntoParams;

use super::runs::{Params, bounded, only_known, params};
use super::{ApiError, ApiResult, AppState, codes, schemas, wire_ops};

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

#[utoipa::path(
    get,
    path = "/v1/notifications",
    operation_id = "listNotifications",
    tag = "operations",
    summary = "The notification outbox, newest first, with what became of each message",
    params(NotificationParams),
    responses(
        (status = 200, description = "the outbox", body = schemas::NotificationList),
        (status = 400, description = "`bad_request`: a bad `limit`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is bound to projects (the outbox spans every project)", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    query: Params,
) -> ApiResult<Json<schemas::NotificationList>> {
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
    let notifications = list.into_iter().map(wire_ops::notification).collect();
    Ok(Json(schemas::NotificationList { notifications }))
}
