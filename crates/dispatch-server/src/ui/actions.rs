//! The buttons: each a POST with the session's CSRF token, carried out by
//! the function the matching `/v1` route uses, then a redirect (303) to
//! the page that shows the result, or an error page with the API's message.

use std::time::Duration;

use axum::Extension;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use dispatch_core::RunId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::page;
use super::session::{Session, check_csrf};
use crate::api::runs::{resolve, wait_for_end};
use crate::api::{ApiError, ApiResult, AppState, lifecycle, reliability, runs};

/// How long a stop from the dashboard lets a local agent finish (like `dispatch stop`).
const GRACE: Duration = Duration::from_secs(10);
/// How long restart waits for the old run to end.
const RESTART_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// Where to go afterwards (a dashboard path).
    #[serde(default)]
    back: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    rationale: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    back: Option<String>,
}

fn back_or(back: Option<&str>, default: String) -> String {
    match back {
        Some(b) if b.starts_with("/ui/") && !b.starts_with("//") && !b.contains('\\') => {
            b.to_string()
        }
        _ => default,
    }
}

fn done(result: ApiResult<String>) -> Response {
    match result {
        Ok(target) => Redirect::to(&target).into_response(),
        Err(e) => page::error(e.status, &e.message),
    }
}

/// Stops a live run: locally like `dispatch stop` (SIGTERM to its process
/// group, grace, SIGKILL), else like `POST /v1/runs/{id}/cancel`.
async fn stop_run(state: &AppState, id: &RunId) -> ApiResult<()> {
    if state.ui.local_runs {
        dispatch_runtime::stop::stop(&*state.store, &state.layout, id, GRACE, false).await?;
    } else {
        runs::cancel(State(state.clone()), Path(id.to_string())).await?;
    }
    Ok(())
}

/// `POST /ui/runs/{id}/stop`.
pub async fn stop(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    done(
        async {
            let id = resolve(&state, &id).await?;
            stop_run(&state, &id).await?;
            Ok(back_or(form.back.as_deref(), format!("/ui/runs/{id}")))
        }
        .await,
    )
}

/// `POST /ui/runs/{id}/restart`: stops it if it is going, then runs its
/// exact parcel, brief and payload again (`POST /v1/runs/{id}/replay`).
pub async fn restart(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    let who = crate::api::policy::who_of_session(session.who.as_deref());
    done(
        async {
            let id = resolve(&state, &id).await?;
            let mut old = state.store.get_run(&id).await?;
            if !old.state.is_terminal() {
                stop_run(&state, &id).await?;
                old = wait_for_end(&state, &id, RESTART_WAIT).await?;
                if !old.state.is_terminal() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        crate::api::codes::CONFLICT,
                        format!(
                            "run {} is still {} after the stop; try again",
                            id.short(),
                            old.status()
                        ),
                    ));
                }
            }
            let new = lifecycle::run_again(&state, &old, None, &who).await?;
            Ok(format!("/ui/runs/{}", new.id))
        }
        .await,
    )
}

/// `POST /ui/runs/{id}/replay`: a finished run's exact parcel, brief and
/// payload again as a new linked run (`POST /v1/runs/{id}/replay`).
pub async fn replay(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    let who = crate::api::policy::who_of_session(session.who.as_deref());
    done(
        async {
            let id = resolve(&state, &id).await?;
            let old = state.store.get_run(&id).await?;
            let new = lifecycle::run_again(&state, &old, None, &who).await?;
            Ok(format!("/ui/runs/{}", new.id))
        }
        .await,
    )
}

/// `POST /ui/runs/{id}/approvals/{approval_id}`: approve or deny, through
/// the handler of `POST /v1/runs/{id}/approvals/{approval_id}`.
pub async fn decide(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path((id, approval_id)): Path<(String, String)>,
    Form(form): Form<DecideForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    let mut body = json!({
        "decision": form.decision,
        "by": session.by(),
    });
    if !form.rationale.trim().is_empty() {
        body["rationale"] = json!(form.rationale.trim());
    }
    if form.decision == "approve" && !form.input.trim().is_empty() {
        match serde_json::from_str::<Value>(&form.input) {
            Ok(input) => body["input"] = input,
            Err(e) => {
                return page::error(
                    StatusCode::BAD_REQUEST,
                    &format!("the edited input is not valid JSON: {e} (hint: go back and fix it)"),
                );
            }
        }
    }
    let target = back_or(form.back.as_deref(), format!("/ui/runs/{id}"));
    // The session's `by` names its token already.
    let decided = reliability::decide(
        State(state),
        Path((id, approval_id)),
        None,
        Bytes::from(body.to_string()),
    )
    .await;
    done(decided.map(|_| target))
}

/// `POST /ui/dead-letters/{id}/replay` (`POST /v1/dead-letters/{id}/replay`).
pub async fn replay_dead(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    let who = crate::api::policy::who_of_session(session.who.as_deref());
    done(
        async {
            let id = resolve(&state, &id).await?;
            let new = reliability::replay_dead_letter(&state, &id, None, &who).await?;
            Ok(format!("/ui/runs/{}", new.id))
        }
        .await,
    )
}
