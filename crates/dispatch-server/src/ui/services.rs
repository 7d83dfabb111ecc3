//! The services page: each running service (`operation=service`, read with
//! `api::runs::list_page` like `GET /v1/runs`) with its stored state (the
//! store function behind `GET /v1/runs/{id}/service`): schedules with their
//! next fire, listeners and webhooks with their counters, and a "wake now"
//! button (CSRF-checked): a cluster service's wake is
//! `POST /v1/runs/{id}/wake`'s, a local one's is `dispatch wake`'s.

use std::time::Duration;

use axum::Extension;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use dispatch_core::now_ms;
use dispatch_runtime::service::ServiceDoc;
use dispatch_runtime::service::config::hook_base;
use dispatch_store::{Run, ServiceState};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::fmt;
use super::page::{self, Nav};
use super::session::{Session, check_csrf, csrf_field};
use crate::api::runs::resolve;
use crate::api::{ApiError, ApiResult, AppState};

/// How long a local service may take to acknowledge a wake.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// `GET /ui/services`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let services =
        match crate::api::services_list::running(&state, session.token.as_ref(), None).await {
            Ok(services) => services,
            Err(e) => return page::error(e.status, &e.message),
        };
    let body = html! {
        h1 { "Services" }
        @if services.is_empty() {
            p.muted { "No service is running. " code { "dispatch serve ./agent" } " starts one." }
        }
        @for (run, saved) in &services {
            (service(run, saved.as_ref(), &session))
        }
    };
    page::page("Services", Nav::Services, &session, body)
}

fn service(run: &Run, saved: Option<&ServiceState>, session: &Session) -> Markup {
    let doc = saved.map(ServiceDoc::decode);
    let name = saved
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| run.parcel_name.clone());
    let cluster = saved.is_some_and(|s| s.name.is_some());
    let now = now_ms();
    html! {
        article.service data-service=(run.id) aria-labelledby={ "svc-" (run.id) } {
            h2 id={ "svc-" (run.id) } {
                (name) " " (fmt::status(run.status()))
                " " span.muted { (if cluster { "cluster" } else { "local" }) }
            }
            p.muted {
                "Run " (fmt::run_link(&run.id)) " · parcel " (run.parcel_name)
                " · up " (fmt::duration(fmt::run_duration(run, now)))
            }
            @match &doc {
                None => p.muted { "No stored state yet." },
                Some(Err(why)) => p.notice.error { "The stored state cannot be read: " (why) },
                Some(Ok(doc)) => {
                    (schedules(doc, now))
                    (listeners(doc, cluster.then(|| hook_base(&name))))
                }
            }
            @if session.can(&run.project, dispatch_store::TokenScope::Run) {
                form method="post" action={ "/ui/services/" (run.id) "/wake" }
                    data-confirm={ "Wake " (name) " now? Its agent runs a turn for real." } {
                    (csrf_field(session))
                    button.primary type="submit" aria-label={ "Wake " (name) " now" } { "Wake now" }
                }
            }
        }
    }
}

fn schedules(doc: &ServiceDoc, now: i64) -> Markup {
    html! {
        @if doc.schedules.is_empty() {
            p.muted { "No schedules." }
        } @else {
            div.table-wrap { table.schedules {
                caption.skip { "Schedules" }
                thead { tr {
                    th scope="col" { "Schedule" } th scope="col" { "Next fire" }
                    th scope="col" { "Last fired" } th scope="col" .num { "Fires" } th scope="col" .num { "Skipped" }
                } }
                tbody { @for s in &doc.schedules { tr {
                    td { code { (s.label()) } }
                    td {
                        @match s.next_fire_at {
                            Some(t) => { (fmt::time(t)) span.muted { " (in " (fmt::duration(Some((t - now).max(0)))) ")" } }
                            None => "-",
                        }
                    }
                    td { @match s.last_fired_at { Some(t) => (fmt::time(t)), None => "never" } }
                    td.num { (s.fires) }
                    td.num { (s.skipped) }
                } } }
            } }
        }
    }
}

fn listeners(doc: &ServiceDoc, hook: Option<String>) -> Markup {
    let policy = doc.config.listen.as_ref();
    html! {
        @if !doc.listeners.is_empty() {
            div.table-wrap { table.listeners {
                caption.skip { "Listeners" }
                thead { tr {
                    th scope="col" { "Listener" } th scope="col" { "Path, methods" }
                    th scope="col" .num { "Accepted" } th scope="col" .num { "Rejected" } th scope="col" { "Last request" }
                } }
                tbody { @for l in &doc.listeners { tr {
                    td {
                        @if let Some(h) = &hook { code { (h) } " " span.muted { "(webhook on every server)" } }
                        @else { code { (l.bound_addr.as_deref().unwrap_or(&l.addr)) } }
                    }
                    td {
                        (policy.and_then(|p| p.path.as_deref()).unwrap_or("any path"))
                        " · "
                        @match policy.map(|p| p.methods.join(", ")).filter(|m| !m.is_empty()) { Some(m) => (m), None => "any method" }
                        @if policy.is_some_and(|p| p.secret_sha256.is_some()) { " · " span.muted { "shared secret" } }
                    }
                    td.num { (l.requests_handled) }
                    td.num { (l.requests_rejected) }
                    td { @match l.last_request_at { Some(t) => (fmt::time(t)), None => "never" } }
                } } }
            } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct WakeForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/services/{id}/wake`: a manual turn; then the wake's run.
pub async fn wake(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<WakeForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    match wake_now(&state, &id).await {
        Ok(target) => Redirect::to(&target).into_response(),
        Err(e) => page::error(e.status, &e.message),
    }
}

async fn wake_now(state: &AppState, id: &str) -> ApiResult<String> {
    let id = resolve(state, id).await?;
    let run = state.store.get_run(&id).await?;
    if crate::services::is_cluster_service(&state.store, &run).await? || !state.ui.local_runs {
        let heartbeat = crate::api::services::wake_cluster(state, id.as_str(), json!({})).await?;
        return Ok(format!("/ui/runs/{}", heartbeat.id));
    }
    let ack = dispatch_runtime::service::wake::request(
        &*state.store,
        &state.layout,
        &id,
        json!({}),
        ACK_WAIT,
    )
    .await?;
    match (ack.run_id, ack.error) {
        (Some(run), _) => Ok(format!("/ui/runs/{run}")),
        (None, why) => Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::api::codes::CONFLICT,
            format!(
                "service {} did not take the wake: {}",
                id.short(),
                why.unwrap_or_else(|| "no reason given".into())
            ),
        )),
    }
}
