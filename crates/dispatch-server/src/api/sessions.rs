//! `GET /v1/sessions`, `GET`/`DELETE /v1/sessions/{parcel}/{name}`, `POST
//! /v1/sessions/prune`: the sessions runs keep between them (`dispatch
//! session --host`). A session belongs to a parcel, not to a project, so
//! these routes take a token bound to no project (reading needs `read`,
//! removing `admin`). A session a live run holds is never removed (409
//! `session_busy`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use dispatch_core::now_ms;
use dispatch_store::TokenRecord;
use serde_json::Value;
use utoipa::IntoParams;

use super::runs::{Params, only_known, params};
use super::{ApiError, ApiResult, AppState, codes, schemas, wire_ops};

/// `GET /v1/sessions` query string.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SessionParams {
    /// Only sessions whose name starts with this (`triage/`, `planner/a2a-`).
    pub prefix: Option<String>,
}

type Token = Option<axum::Extension<TokenRecord>>;

/// Sessions are not a project's: a token bound to projects may not see or
/// remove them.
fn unbound(token: &Token) -> ApiResult<()> {
    match token {
        Some(t) if !t.projects.is_empty() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            format!(
                "the token `{}` is bound to projects; sessions belong to parcels, not projects (hint: use a token bound to no project)",
                t.name
            ),
        )),
        _ => Ok(()),
    }
}

/// `<parcel>/<name>`, each part a plain name.
fn name_of(parcel: &str, name: &str) -> ApiResult<String> {
    use dispatch_runtime::submit::check_session_name as plain;
    if plain(parcel).is_err() || plain(name).is_err() {
        return Err(ApiError::bad_request(format!(
            "`{parcel}/{name}` is not a session name: sessions are named <parcel>/<name>, each 1 to 128 letters, digits, `.`, `_` or `-`"
        )));
    }
    Ok(format!("{parcel}/{name}"))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::SESSION_NOT_FOUND,
        format!("no session `{name}` (hint: GET /v1/sessions lists sessions)"),
    )
}

/// Sessions, most recently used first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "listSessions",
    tag = "operations",
    summary = "Sessions runs keep between them (`run --session`, `chat`, A2A contexts), most recently used first",
    params(SessionParams),
    responses(
        (status = 200, description = "the sessions, most recently used first", body = schemas::SessionList),
        (status = 400, description = "`bad_request`: an unknown query parameter", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is bound to projects", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Token,
    query: Params,
) -> ApiResult<Json<schemas::SessionList>> {
    unbound(&token)?;
    let params = params(query)?;
    only_known(params.keys(), &["prefix"])?;
    let prefix = params.get("prefix").map_or("", String::as_str);
    let all = dispatch_store::session_summaries(&*state.store, prefix).await?;
    let sessions = all.into_iter().map(wire_ops::session).collect();
    Ok(Json(schemas::SessionList { sessions }))
}

/// One session with everything it keeps.
#[utoipa::path(
    get,
    path = "/v1/sessions/{parcel}/{name}",
    operation_id = "getSession",
    tag = "operations",
    summary = "A session with everything it keeps: the conversation, the file, memory and checkpoint keys",
    params(("parcel" = String, Path, description = "the parcel"), ("name" = String, Path, description = "the session's name")),
    responses(
        (status = 200, description = "the session", body = schemas::SessionDetail),
        (status = 400, description = "`bad_request`: not a session name", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is bound to projects", body = schemas::Error),
        (status = 404, description = "`session_not_found`", body = schemas::Error),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    token: Token,
    Path((parcel, name)): Path<(String, String)>,
) -> ApiResult<Json<schemas::SessionDetail>> {
    unbound(&token)?;
    let name = name_of(&parcel, &name)?;
    match dispatch_store::session_contents(&*state.store, &name).await? {
        Some(c) => Ok(Json(wire_ops::session_detail(c))),
        None => Err(not_found(&name)),
    }
}

/// Removes a session and everything it keeps.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{parcel}/{name}",
    operation_id = "removeSession",
    tag = "operations",
    summary = "Remove a session and everything it keeps (refused while a live run holds it)",
    params(("parcel" = String, Path, description = "the parcel"), ("name" = String, Path, description = "the session's name")),
    responses(
        (status = 200, description = "how many records went", body = schemas::SessionRemoved),
        (status = 400, description = "`bad_request`: not a session name", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: needs `admin` on a token bound to no project", body = schemas::Error),
        (status = 404, description = "`session_not_found`", body = schemas::Error),
        (status = 409, description = "`session_busy`: a live run holds it (the message names the run)", body = schemas::Error),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    token: Token,
    Path((parcel, name)): Path<(String, String)>,
) -> ApiResult<Json<schemas::SessionRemoved>> {
    unbound(&token)?;
    let name = name_of(&parcel, &name)?;
    match state.store.remove_session(&name).await? {
        0 => Err(not_found(&name)),
        removed => Ok(Json(schemas::SessionRemoved { removed })),
    }
}

/// Removes the sessions unused since a time.
#[utoipa::path(
    post,
    path = "/v1/sessions/prune",
    operation_id = "pruneSessions",
    tag = "operations",
    summary = "Remove every session unused since `until` (an age such as `24h`, or an RFC 3339 time); none a live run holds",
    request_body = dispatch_api::PruneSessions,
    responses(
        (status = 200, description = "the removed sessions' names", body = schemas::SessionsPruned),
        (status = 400, description = "`bad_request`: a bad `until`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: needs `admin` on a token bound to no project", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn prune(
    State(state): State<AppState>,
    token: Token,
    body: Bytes,
) -> ApiResult<Json<schemas::SessionsPruned>> {
    unbound(&token)?;
    // The body is a `dispatch_api::PruneSessions` (the CLI sends one), read
    // by hand for the one-line errors with their hint.
    let hint = "(hint: {\"until\": \"24h\", \"prefix\": \"planner/a2a-\"})";
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad prune request: {e} {hint}")))?;
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "until" | "prefix")))
    {
        return Err(ApiError::bad_request(format!(
            "bad prune request: unknown field `{}`, expected `until` or `prefix` {hint}",
            dispatch_core::event::shorten(extra, 80)
        )));
    }
    let Some(until) = body["until"].as_str() else {
        return Err(ApiError::bad_request(format!(
            "bad prune request: `until` is required {hint}"
        )));
    };
    let before = dispatch_core::time::parse_time(until, now_ms())
        .map_err(|e| ApiError::bad_request(format!("until: {e}")))?;
    let prefix = match &body["prefix"] {
        Value::Null => "",
        Value::String(p) => p.as_str(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "`prefix` is a string {hint}"
            )));
        }
    };
    let removed = state.store.expire_sessions(prefix, before).await?;
    Ok(Json(schemas::SessionsPruned { removed }))
}
