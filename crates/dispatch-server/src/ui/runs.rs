//! The runs page: a filtered page of runs (through `api::runs::list_page`,
//! like `GET /v1/runs`), newest first, a cursor to the next page, a search
//! by id prefix, and live rows over SSE (`live::runs`).

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use dispatch_core::{Status, Ts, now_ms};
use dispatch_store::Run;
use maud::{Markup, html};

use super::fmt;
use super::page::{self, Nav};
use super::session::{Session, csrf_field, encode};
use crate::api::runs::list_page;
use crate::api::{ApiError, AppState};

/// What can start a run (the `trigger` filter of `GET /v1/runs`).
const TRIGGERS: &[&str] = &[
    "manual", "restart", "replay", "upstream", "eval", "workflow",
];

/// The runs a page shows.
pub const PAGE: usize = 50;

/// The page's query: the filters `GET /v1/runs` takes, and `q` (an id prefix).
#[derive(Clone, Debug, Default)]
pub struct RunsQuery {
    pub pairs: Vec<(String, String)>,
    pub q: Option<String>,
}

impl RunsQuery {
    pub fn parse(pairs: Vec<(String, String)>) -> RunsQuery {
        let mut query = RunsQuery::default();
        for (k, v) in pairs {
            let v = v.trim().to_string();
            if v.is_empty() {
                continue;
            }
            if k == "q" {
                query.q = Some(v);
            } else {
                query.pairs.push((k, v));
            }
        }
        query
    }

    /// The query of a request (a bad one: the one line saying why).
    pub fn from_request(
        q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<RunsQuery, String> {
        q.map(|Query(pairs)| RunsQuery::parse(pairs))
            .map_err(|e| format!("bad query string: {e}"))
    }

    pub fn get(&self, key: &str) -> &str {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The filters for `list_page`: the page size, and no cursor when `first`.
    pub fn filters(&self, first: bool) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "limit" && !(first && k == "cursor"))
            .cloned()
            .collect();
        pairs.push(("limit".into(), PAGE.to_string()));
        pairs
    }

    /// The query string of these filters (without the cursor), plus `extra`.
    pub fn link(&self, extra: &[(&str, &str)]) -> String {
        let parts: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "cursor" && k != "limit")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        parts.join("&")
    }
}

/// `GET /ui/runs`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let query = match RunsQuery::from_request(q) {
        Ok(q) => q,
        Err(e) => return page::error(StatusCode::BAD_REQUEST, &e),
    };
    let mut notice = None;
    if let Some(q) = &query.q {
        match crate::api::runs::resolve(&state, q).await {
            Ok(id) => return Redirect::to(&format!("/ui/runs/{id}")).into_response(),
            Err(e) => notice = Some(e.message),
        }
    }
    let token = session.token.as_ref();
    let (status, listed) = match list_page(&state, query.filters(false), true, token).await {
        Ok(page) => (StatusCode::OK, Ok(page)),
        Err(e) => (e.status, Err(e.message)),
    };
    let now = now_ms();
    let cursor = query.get("cursor");
    let live_src = format!("/ui/live/runs?{}", query.link(&[]));
    let body = html! {
        h1 { span.live-dot title="not live" {} "Runs" }
        (filters(&query))
        @if let Some(n) = &notice { p.notice.error role="alert" { (n) } }
        @match &listed {
            Err(message) => p.notice.error role="alert" { (message) },
            Ok((runs, next)) => {
                div.table-wrap {
                    table #runs {
                        caption.skip { "Runs, newest first" }
                        (head())
                        tbody data-live=[cursor.is_empty().then_some(live_src.as_str())] {
                            (rows(runs, &session, now))
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if !cursor.is_empty() {
                        a href={ "/ui/runs?" (query.link(&[])) } { "« Newest" }
                    }
                    @if let Some(next) = next {
                        a href={ "/ui/runs?" (query.link(&[("cursor", next)])) } rel="next" { "Older »" }
                    }
                    span.muted { (runs.len()) " shown" }
                }
            }
        }
    };
    (status, page::page("Runs", Nav::Runs, &session, body)).into_response()
}

fn filters(query: &RunsQuery) -> Markup {
    let status = query.get("status");
    html! {
        form.filters method="get" action="/ui/runs" role="search" aria-label="Filter runs" {
            div {
                label for="f-q" { "Run id (prefix)" }
                input #f-q name="q" value=[query.q.as_deref()] size="14" spellcheck="false";
            }
            div {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" { "any" }
                    option value="running,starting,paused" selected[status == "running,starting,paused"] { "live" }
                    option value="failed,timed_out" selected[status == "failed,timed_out"] { "failed or timed out" }
                    @for s in Status::ALL {
                        option value=(s.to_string()) selected[status == s.to_string()] { (s.to_string()) }
                    }
                }
            }
            div {
                label for="f-trigger" { "Trigger" }
                select #f-trigger name="trigger" {
                    option value="" { "any" }
                    @for t in TRIGGERS {
                        option value=(t) selected[query.get("trigger") == *t] { (t) }
                    }
                }
            }
            div {
                label for="f-project" { "Project" }
                input #f-project name="project" value=(query.get("project")) size="10" spellcheck="false";
            }
            div {
                label for="f-parcel" { "Parcel" }
                input #f-parcel name="parcel" value=(query.get("parcel")) size="12";
            }
            div {
                label for="f-label" { "Labels" }
                input #f-label name="label" value=(query.get("label")) size="12" placeholder="a,b";
            }
            div {
                label for="f-parent" { "Parent run" }
                input #f-parent name="parent" value=(query.get("parent")) size="12" spellcheck="false";
            }
            div {
                label for="f-after" { "Created after" }
                input #f-after name="created_after" value=(query.get("created_after")) size="10" placeholder="1h, 7d, RFC 3339";
            }
            div {
                label for="f-before" { "Created before" }
                input #f-before name="created_before" value=(query.get("created_before")) size="10";
            }
            div.actions {
                button.primary type="submit" { "Filter" }
                a.button href="/ui/runs" { "Clear" }
            }
        }
    }
}

fn head() -> Markup {
    html! {
        thead { tr {
            th scope="col" { "Run" }
            th scope="col" { "Parcel" }
            th scope="col" { "Status" }
            th scope="col" .hide-narrow { "Created" }
            th scope="col" .num { "Duration" }
            th scope="col" .num { "Tokens" }
            th scope="col" .num { "Cost" }
            th scope="col" .num.hide-narrow { "Attempt" }
            th scope="col" { span.skip { "Actions" } }
        } }
    }
}

/// The table's rows (also sent live by `live::runs`).
pub fn rows(runs: &[Run], session: &Session, now: Ts) -> Markup {
    html! {
        @if runs.is_empty() {
            tr { td colspan="9" .muted { "No runs match." } }
        }
        @for run in runs {
            tr data-id=(run.id) data-v=(run.version) data-status=(run.status().to_string()) {
                td { (fmt::run_link(&run.id)) }
                td {
                    (run.parcel_name) " " span.muted.hide-narrow { (run.operation.to_string()) }
                    @if run.project != dispatch_core::project::DEFAULT_PROJECT {
                        " " span.muted.project { "· " (run.project) }
                    }
                }
                td title=[run.state.reason()] { (fmt::status(run.status())) }
                td.hide-narrow { (fmt::time(run.created_at)) }
                td.num { (fmt::duration(fmt::run_duration(run, now))) }
                td.num { (fmt::count(run.usage.total_tokens())) }
                td.num { (fmt::cost(run.usage.cost_usd)) }
                td.num.hide-narrow { (run.attempt) }
                td { (row_action(run, session)) }
            }
        }
    }
}

fn row_action(run: &Run, session: &Session) -> Markup {
    let short = run.id.short();
    if !session.can(&run.project, dispatch_store::TokenScope::Run) {
        return html! {};
    }
    html! {
        @if run.state.is_terminal() {
            form method="post" action={ "/ui/runs/" (run.id) "/replay" }
                data-confirm={ "Replay run " (short) "? The agent runs again for real." } {
                (csrf_field(session))
                button type="submit" aria-label={ "Replay run " (short) } { "Replay" }
            }
        } @else {
            form method="post" action={ "/ui/runs/" (run.id) "/stop" }
                data-confirm={ "Stop run " (short) "?" } {
                (csrf_field(session))
                button.danger type="submit" aria-label={ "Stop run " (short) } { "Stop" }
            }
        }
        form method="post" action={ "/ui/runs/" (run.id) "/restart" }
            data-confirm={ "Restart run " (short) ": stop it if it is going, and run it again for real?" } {
            (csrf_field(session))
            button type="submit" aria-label={ "Restart run " (short) } { "Restart" }
        }
    }
}

/// The first page's runs for `query` (the live rows), of the projects
/// `session` may see.
pub async fn first_page(
    state: &AppState,
    query: &RunsQuery,
    session: &Session,
) -> Result<Vec<Run>, ApiError> {
    Ok(
        list_page(state, query.filters(true), true, session.token.as_ref())
            .await?
            .0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_keeps_filters_and_drops_empty_fields() {
        let pairs = [
            ("q", ""),
            ("status", "failed"),
            ("parcel", "a b"),
            ("label", "x,y"),
            ("cursor", "01"),
        ];
        let q = RunsQuery::parse(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(q.q, None);
        assert_eq!(q.get("parcel"), "a b");
        assert_eq!(q.get("label"), "x,y");
        assert_eq!(q.link(&[]), "status=failed&parcel=a%20b&label=x%2Cy");
        assert!(q.filters(true).iter().all(|(k, _)| k != "cursor"));
        assert!(q.filters(false).iter().any(|(k, _)| k == "cursor"));
    }
}
