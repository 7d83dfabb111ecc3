//! `POST /hooks/{name}[/{path}]`: the webhook of a cluster service, on any
//! server. The same checks (`dispatch_runtime::service::check`), secrets
//! (compared by SHA-256), limits and answers as a local service's listener:
//! 202 with the wake's heartbeat run id, 400 / 401 / 404 / 405 / 413 / 431,
//! 500 when the heartbeat could not be created, 503 when the service stopped
//! meanwhile. Every answer is `{code, message}` JSON but the 202. No API token:
//! a webhook's caller proves itself with the service's shared secret, or its
//! signature (`dispatch_runtime::service::signature`, the key read from this
//! server's environment). The deliveries taken are remembered in the store,
//! so a replay is refused whichever server it reaches.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatch_runtime::service::ServiceDoc;
use dispatch_runtime::service::check::{self, Rejection};
use dispatch_runtime::service::config::hook_base;
use dispatch_runtime::service::signature::{self, Delivery, Verifier};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use super::{AppState, schemas};
use crate::services::{WakeError, WakeSpec};

#[utoipa::path(
    post,
    path = "/hooks/{name}",
    operation_id = "postHook",
    tag = "services",
    summary = "The webhook of the cluster service `name` (one with no listen path)",
    description = "Needs no API token: when the service has a shared secret, send it as `x-dispatch-secret` or `Authorization: Bearer`; when it has a LISTEN_SIGNATURE, sign the request as GitHub (`X-Hub-Signature-256`, `X-GitHub-Delivery`), Stripe (`Stripe-Signature`) or `hmac-sha256` (`X-Dispatch-Timestamp`, `X-Dispatch-Signature`) do. The body (any content) becomes the wake's `request` envelope.",
    params(("name" = String, Path, description = "the service's name")),
    request_body(content = String, description = "anything, up to the service's body limit", content_type = "*/*"),
    responses(
        (status = 202, description = "accepted: the wake's heartbeat run", body = schemas::HookAccepted),
        (status = 400, description = "`bad_body`", body = schemas::HookError),
        (status = 401, description = "`unauthorized`: missing or wrong shared secret; `signature_missing`, `bad_signature`, `stale_timestamp`, `replayed`: a signed webhook's request is unsigned, wrongly signed, too old or already taken", body = schemas::HookError),
        (status = 404, description = "`not_found`: no running service of that name with a webhook at that path", body = schemas::HookError),
        (status = 405, description = "`method_not_allowed`", body = schemas::HookError),
        (status = 413, description = "`body_too_large`", body = schemas::HookError),
        (status = 431, description = "`headers_too_large`", body = schemas::HookError),
        (status = 500, description = "`wake_failed`; `signature_unconfigured`: this server lacks the signing key in its environment", body = schemas::HookError),
        (status = 503, description = "`stopping`: the service stopped meanwhile", body = schemas::HookError),
    ),
    security(()),
)]
pub async fn root(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    hook(state, name, "/".to_string(), request).await
}

#[utoipa::path(
    post,
    path = "/hooks/{name}/{path}",
    operation_id = "postHookPath",
    tag = "services",
    summary = "The webhook of the cluster service `name` at its listen path",
    description = "As `postHook`; `path` is the service's listen path (without its leading `/`, any number of segments).",
    params(
        ("name" = String, Path, description = "the service's name"),
        ("path" = String, Path, description = "the listen path"),
    ),
    request_body(content = String, description = "anything, up to the service's body limit", content_type = "*/*"),
    responses(
        (status = 202, description = "accepted: the wake's heartbeat run", body = schemas::HookAccepted),
        (status = 400, description = "`bad_body`", body = schemas::HookError),
        (status = 401, description = "`unauthorized`: missing or wrong shared secret; `signature_missing`, `bad_signature`, `stale_timestamp`, `replayed`: a signed webhook's request is unsigned, wrongly signed, too old or already taken", body = schemas::HookError),
        (status = 404, description = "`not_found`: no running service of that name with a webhook at that path", body = schemas::HookError),
        (status = 405, description = "`method_not_allowed`", body = schemas::HookError),
        (status = 413, description = "`body_too_large`", body = schemas::HookError),
        (status = 431, description = "`headers_too_large`", body = schemas::HookError),
        (status = 500, description = "`wake_failed`; `signature_unconfigured`: this server lacks the signing key in its environment", body = schemas::HookError),
        (status = 503, description = "`stopping`: the service stopped meanwhile", body = schemas::HookError),
    ),
    security(()),
)]
pub async fn with_path(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    request: Request,
) -> Response {
    hook(state, name, format!("/{path}"), request).await
}

fn answer(r: Rejection) -> Response {
    let mut response = (r.status, Json(r.body())).into_response();
    for (name, value) in r.headers {
        response.headers_mut().insert(name, value);
    }
    // As a local service answers: a sender may try again in a second.
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    response
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    answer(Rejection::new(status, code, message))
}

async fn hook(state: AppState, name: String, path: String, request: Request) -> Response {
    let not_found = || {
        fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no running service `{name}` has a webhook here"),
        )
    };
    let saved = match state.store.service_named(&name).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(),
        Err(e) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                crate::api::store_message(&e),
            );
        }
    };
    let Some(doc) = ServiceDoc::decode(&saved).ok() else {
        return not_found();
    };
    let Some(policy) = doc.config.listen.clone() else {
        return not_found();
    };
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let (parts, body) = request.into_parts();
    let secret = check::secret_digest(&policy);
    if let Err(r) = check::check_head(
        &policy,
        secret.as_deref(),
        &parts.method,
        &path,
        &parts.headers,
    ) {
        state.services().count_rejected(&saved.run_id).await;
        return answer(r);
    }
    let body = match Limited::new(body, policy.max_body_bytes as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            state.services().count_rejected(&saved.run_id).await;
            return answer(match e.is::<http_body_util::LengthLimitError>() {
                true => check::body_too_large(&policy),
                false => check::bad_body(),
            });
        }
    };
    if doc.config.a2a.is_some() {
        let base = base_of(&parts.headers, &name);
        return match crate::a2a::agent(
            &state.services(),
            state.callback_policy,
            &saved.run_id,
            &name,
            &doc,
            &base,
        )
        .await
        {
            Ok(agent) if agent.rpc_paths.contains(&path) => {
                dispatch_runtime::service::a2a::rpc(&agent, &body)
                    .await
                    .map(axum::body::Body::new)
            }
            Ok(agent) => fail(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no such path (hint: the agent card is at /hooks/{name}/.well-known/agent-card.json, JSON-RPC at /hooks/{name}{})",
                    agent.rpc_paths[0]
                ),
            ),
            Err(why) => fail(StatusCode::INTERNAL_SERVER_ERROR, "wake_failed", why),
        };
    }
    let delivery = match &policy.signature {
        None => None,
        Some(sig) => match take_signed(&state, &name, sig, &parts.headers, &body).await {
            Ok(d) => Some(d),
            Err(r) => {
                state.services().count_rejected(&saved.run_id).await;
                return r;
            }
        },
    };
    let response = wake(&state, &name, &saved.run_id, remote, &path, &parts, &body).await;
    if let Some(d) = delivery.filter(|_| response.status() != StatusCode::ACCEPTED) {
        // The wake was refused: the sender may retry the same delivery.
        for key in &d.keys {
            let _ = state.store.release_delivery(&name, key).await;
        }
    }
    response
}

/// Verifies a signed request and takes its delivery in the store: the
/// answer to send instead when it is unsigned, wrongly signed, stale or a
/// replay.
async fn take_signed(
    state: &AppState,
    name: &str,
    sig: &dispatch_core::parcel::ListenSignature,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Delivery, Response> {
    let verifier = Verifier::from_env(sig).map_err(|why| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "signature_unconfigured",
            format!("this server cannot check the signature: {why}"),
        )
    })?;
    let now = dispatch_core::now_ms();
    let d = verifier.verify(headers, body, now).map_err(answer)?;
    let mut taken: Vec<&String> = Vec::new();
    for key in &d.keys {
        match state
            .store
            .claim_delivery(name, key, d.remember_until_ms, now)
            .await
        {
            Ok(true) => taken.push(key),
            claimed => {
                for k in taken {
                    let _ = state.store.release_delivery(name, k).await;
                }
                return Err(match claimed {
                    Err(e) => fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        e.to_string(),
                    ),
                    _ => answer(signature::replayed()),
                });
            }
        }
    }
    Ok(d)
}

async fn wake(
    state: &AppState,
    name: &str,
    run_id: &dispatch_core::RunId,
    remote: String,
    path: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Response {
    let request = check::envelope(
        &hook_base(name),
        &remote,
        &parts.method,
        path,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        body,
    );
    let spec = WakeSpec {
        session: None,
        reason: "http",
        detail: json!({}),
        payload: serde_json::Value::Null,
        request: Some(request),
    };
    match state.services().wake(run_id, spec).await {
        Ok(run) => (
            StatusCode::ACCEPTED,
            Json(schemas::HookAccepted {
                run_id: run.id.to_string(),
                status: "accepted".to_string(),
            }),
        )
            .into_response(),
        Err(WakeError::NotRunning(_)) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the service is stopping",
        ),
        // Counted with the decision.
        Err(WakeError::Busy(why)) => fail(StatusCode::SERVICE_UNAVAILABLE, "busy", why),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "wake_failed",
            format!("could not create the heartbeat run: {e}"),
        ),
    }
}

/// Where a request reached the service's hook: `http://<Host>/hooks/<name>`
/// (`--a2a-url` names another, for a proxy or TLS in front).
fn base_of(headers: &axum::http::HeaderMap, name: &str) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{}", hook_base(name))
}

#[utoipa::path(
    get,
    path = "/hooks/{name}/{path}",
    operation_id = "getHookAgentCard",
    tag = "services",
    summary = "The A2A agent card of the cluster service `name` (`dispatch serve --a2a --host`)",
    description = "Needs no token (the card holds no secret; it says how to authenticate). JSON-RPC (`message/send`, `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/resubscribe`, `tasks/pushNotificationConfig/*`) is `POST /hooks/{name}[/{path}]`, behind the service's shared secret as `Authorization: Bearer`. The older `/.well-known/agent.json` serves the same card.",
    params(
        ("name" = String, Path, description = "the service's name"),
        ("path" = String, Path, description = "`.well-known/agent-card.json` (or the older `.well-known/agent.json`)"),
    ),
    responses(
        (status = 200, description = "the agent card", body = Object),
        (status = 404, description = "`not_found`: no running A2A service of that name", body = schemas::HookError),
        (status = 500, description = "`wake_failed`: the card could not be built (its parcel is unreadable)", body = schemas::HookError),
        (status = 503, description = "`unavailable`: the database is unavailable; retry later", body = schemas::HookError),
    ),
    security(()),
)]
pub async fn card(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let not_found = || {
        fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no running A2A service `{name}` has a card here"),
        )
    };
    let wanted = format!("/{path}");
    if !matches!(
        wanted.as_str(),
        "/.well-known/agent-card.json" | "/.well-known/agent.json"
    ) {
        return not_found();
    }
    let saved = match state.store.service_named(&name).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(),
        Err(e) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                crate::api::store_message(&e),
            );
        }
    };
    let Some(doc) = ServiceDoc::decode(&saved)
        .ok()
        .filter(|d| d.config.a2a.is_some())
    else {
        return not_found();
    };
    let base = base_of(&headers, &name);
    match crate::a2a::agent(
        &state.services(),
        state.callback_policy,
        &saved.run_id,
        &name,
        &doc,
        &base,
    )
    .await
    {
        Ok(agent) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            agent.card.clone(),
        )
            .into_response(),
        Err(why) => fail(StatusCode::INTERNAL_SERVER_ERROR, "wake_failed", why),
    }
}
