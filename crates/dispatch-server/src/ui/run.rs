//! The run page: its header (state and reason, parcel and digest, attempts,
//! duration, tokens, cost), the timeline, approvals, the live log, tool and
//! model calls, output, artifacts, child runs and events.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatch_core::{Ts, now_ms};
use dispatch_runtime::report::RunReport;
use dispatch_store::Run;
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::{Session, csrf_field};
use super::{fmt, log, run_parts, timeline};
use crate::api::runs::{list_page, resolve};
use crate::api::{ApiResult, AppState};

/// The most events a page reads (the timeline and the events table).
pub const MAX_EVENTS: usize = dispatch_runtime::report::MAX_EVENTS;

/// Everything the page shows of one run: its report (the one
/// `GET /v1/runs/{id}/report` answers and `inspect-run` prints).
pub struct RunView {
    pub report: RunReport,
    pub now: Ts,
}

impl RunView {
    /// Reads the run `id` (a prefix is enough) through the report the API serves.
    pub async fn load(state: &AppState, id: &str) -> ApiResult<RunView> {
        let id = resolve(state, id).await?;
        let report = crate::api::report::of(state, &id).await?;
        Ok(RunView {
            report,
            now: now_ms(),
        })
    }

    pub fn run(&self) -> &Run {
        &self.report.run
    }

    /// The newest event's seq (0 without events): the live page's cursor.
    pub fn last_seq(&self) -> i64 {
        self.report.events.last().map_or(0, |e| e.seq)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RunQuery {
    log_before: Option<u64>,
    events_from: Option<usize>,
}

/// The call records of the conversations the page shows that ran on
/// another machine: from the cluster's artifact store into this server's
/// `runs/<id>/` (once; see `dispatch_runtime::objects::calls`).
async fn fetch_calls(state: &AppState, view: &RunView) {
    let dir = state.layout.run_dir(&view.run().id);
    let shas = run_parts::shown_calls(&view.report.model_calls)
        .filter_map(|c| c.str("cassette_sha256").map(str::to_string));
    for sha in shas {
        if let Err(e) = state.artifacts.fetch_call(&view.run().id, &sha, &dir).await {
            tracing::warn!(
                "[server] run {}: model-call record {sha}: {}",
                view.run().id,
                dispatch_runtime::objects::chain(&e)
            );
            return;
        }
    }
}

/// `GET /ui/runs/{id}`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    query: Result<Query<RunQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return page::error(StatusCode::BAD_REQUEST, &format!("bad query string: {e}")),
    };
    let view = match RunView::load(&state, &id).await {
        Ok(v) => v,
        Err(e) => return page::error(e.status, &e.message),
    };
    fetch_calls(&state, &view).await;
    let run = view.run();
    let log = match log::window(&state, &run.id, query.log_before).await {
        Ok(w) => w,
        Err(e) => return page::error(e.status, &e.message),
    };
    let children = list_page(
        &state,
        vec![
            ("parent".into(), run.id.to_string()),
            ("limit".into(), "50".into()),
        ],
        true,
        session.token.as_ref(),
    )
    .await
    .map(|(runs, _)| runs)
    .unwrap_or_default();
    let workflow = super::workflow::is_workflow(&state, &run.id).await;
    let bom = crate::api::bom::bom(State(state.clone()), Path(run.id.to_string()))
        .await
        .map(|j| j.0)
        .ok();
    let live = !run.state.is_terminal();
    let title = format!("Run {}", run.id.short());
    let body = html! {
        div data-live-run=[live.then(|| format!("/ui/live/runs/{}?seq={}&v={}", run.id, view.last_seq(), run.version))] {
            h1 { span.live-dot title="not live" {} "Run " code { (run.id.short()) } (fmt::copy(run.id.as_str(), "Copy run id")) }
            div #run-header { (header(&view, &session)) }
            @if workflow {
                p.workflow-link { a #workflow-link href={ "/ui/runs/" (run.id) "/workflow" } { "Workflow: communication graph, agents and messages »" } }
            }
            h2 #timeline-title { "Timeline" }
            section.timeline #run-timeline aria-labelledby="timeline-title" { (timeline_part(&view)) }
            div #run-approvals { (run_parts::approvals(&view, &session)) }
        }
        h2 #log-title { "Log" }
        section aria-labelledby="log-title" { (log::section(&run.id, &log, live)) }
        (run_parts::output(run))
        (run_parts::tool_calls(&view.report.tool_calls))
        (run_parts::model_calls(&view.report.model_calls, &state.layout, &run.id))
        (run_parts::bom(bom.as_ref()))
        (run_parts::artifacts(&view.report.artifacts, &run.id))
        (run_parts::children(&children, &session, view.now))
        (run_parts::events(&view.report.events, query.events_from, &run.id))
    };
    (
        StatusCode::OK,
        page::page(&title, Nav::Runs, &session, body),
    )
        .into_response()
}

/// The timeline of the view.
pub fn timeline_part(view: &RunView) -> Markup {
    let bars = timeline::build((&view.report).into(), view.now);
    timeline::render(&bars)
}

/// The header: state and reason, the facts, the buttons.
pub fn header(view: &RunView, session: &Session) -> Markup {
    let run = view.run();
    let digest = &run.parcel_digest;
    html! {
        p.reason {
            (fmt::status(run.status()))
            @if let Some(reason) = run.state.reason() { " " span { (reason) } }
            @if let Some(why) = &view.report.waiting { " " span #waiting { (why) } }
            @if run.stop_requested_at.is_some() && !run.state.is_terminal() { " " span.muted { "(stop requested)" } }
        }
        dl.facts {
            div { dt { "Project" } dd { (run.project) } }
            div { dt { "Parcel" } dd { (run.parcel_name) " " span.muted { (run.operation.to_string()) } } }
            div { dt { "Digest" } dd { code title=(digest) { (fmt::clip(digest, 12)) } (fmt::copy(digest, "Copy parcel digest")) } }
            div { dt { "Attempts" } dd { (run.attempt) } }
            div { dt { "Created" } dd { (fmt::time(run.created_at)) } }
            div { dt { "Duration" } dd { (fmt::duration(fmt::run_duration(run, view.now))) } }
            div { dt { "Tokens" } dd { (fmt::count(run.usage.total_tokens())) span.muted { " (" (fmt::count(run.usage.input_tokens)) " in, " (fmt::count(run.usage.output_tokens)) " out)" } } }
            div { dt { "Cost" } dd { (fmt::cost(run.usage.cost_usd)) } }
            @if let Some(code) = run.state.exit_code() { div { dt { "Exit code" } dd { (code) } } }
            @if let Some(parent) = &run.parent_id { div { dt { "Parent" } dd { (fmt::run_link(parent)) } } }
            @if let Some(origin) = &run.origin_id { div { dt { "Replay of" } dd { (fmt::run_link(origin)) } } }
            @if !run.labels.is_empty() { div { dt { "Labels" } dd { (run.labels.join(", ")) } } }
        }
        @if session.can(&run.project, dispatch_store::TokenScope::Run) { div.actions.run-actions {
            @if !run.state.is_terminal() {
                form method="post" action={ "/ui/runs/" (run.id) "/stop" } data-confirm="Stop this run?" {
                    (csrf_field(session))
                    button.danger type="submit" #stop { "Stop" }
                }
            }
            form method="post" action={ "/ui/runs/" (run.id) "/restart" }
                data-confirm="Restart: stop this run if it is going, and run it again for real?" {
                (csrf_field(session))
                button type="submit" #restart { "Restart" }
            }
            @if run.state.is_terminal() {
                form method="post" action={ "/ui/runs/" (run.id) "/replay" }
                    data-confirm="Replay: run the exact parcel, brief and payload again, for real?" {
                    (csrf_field(session))
                    button type="submit" #replay { "Replay" }
                }
            }
        } }
    }
}

/// `GET /ui/runs/{id}/artifacts/{sha256}`: one artifact's bytes, through
/// the handler of `GET /v1/runs/{id}/artifacts/{sha256}`.
pub async fn artifact(
    State(state): State<AppState>,
    method: axum::http::Method,
    Path((id, sha256)): Path<(String, String)>,
) -> Response {
    match crate::api::artifact::download(State(state), method, Path((id, sha256))).await {
        Ok(r) => r,
        Err(e) => page::error(e.status, &e.message),
    }
}
