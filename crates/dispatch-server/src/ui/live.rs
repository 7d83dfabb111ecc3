//! The live parts as server-sent events: the runs table's rows, and a run
//! page's header, timeline and approvals, re-rendered on the server when
//! what they show changed (the browser swaps escaped HTML in).

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dispatch_core::now_ms;
use futures_util::stream::unfold;
use serde::Deserialize;
use serde_json::json;

use super::run::{RunView, header, timeline_part};
use super::runs::{RunsQuery, first_page, rows};
use super::session::Session;
use super::{page, run_parts};
use crate::api::AppState;

/// How often a live view looks for news.
const POLL: Duration = Duration::from_millis(500);

/// `GET /ui/live/runs?<filters>`: `rows` events with the first page's rows
/// (`{"html": …}`) whenever a run in it appeared or changed.
pub async fn runs(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let query = match RunsQuery::from_request(q) {
        Ok(q) => q,
        Err(e) => return page::error(StatusCode::BAD_REQUEST, &e),
    };
    // What the page was rendered with counts as sent.
    let first = first_page(&state, &query, &session)
        .await
        .ok()
        .map(|r| fingerprint(&r));
    let stopping = state.stopping.clone();
    let stream = unfold(
        (state, session, query, first),
        |(state, session, query, mut sent)| async move {
            loop {
                if let Ok(runs) = first_page(&state, &query, &session).await {
                    let print = fingerprint(&runs);
                    if sent.as_ref() != Some(&print) {
                        sent = Some(print);
                        let html = rows(&runs, &session, now_ms()).into_string();
                        let event = SseEvent::default()
                            .event("rows")
                            .data(json!({ "html": html }).to_string());
                        return Some((Ok::<_, Infallible>(event), (state, session, query, sent)));
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        },
    );
    Sse::new(stopping.bound(stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What identifies the rows' content: each run's id and version (every
/// state change bumps it) and its usage.
fn fingerprint(runs: &[dispatch_store::Run]) -> Vec<(String, i64, u64)> {
    runs.iter()
        .map(|r| (r.id.to_string(), r.version, r.usage.total_tokens()))
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct RunLive {
    #[serde(default)]
    seq: i64,
    #[serde(default)]
    v: i64,
}

/// `GET /ui/live/runs/{id}?seq=&v=`: `update` events with the header,
/// timeline and approvals (by element id) whenever the run changed or has
/// new events; `end` once it has finished and that was sent.
pub async fn run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<RunLive>,
) -> Response {
    let initial = Some((q.seq, q.v));
    let stopping = state.stopping.clone();
    let stream = unfold(Some((state, session, id, initial)), |s| async move {
        let (state, session, id, mut seen) = s?;
        loop {
            let view = match RunView::load(&state, &id).await {
                Ok(v) => v,
                Err(_) => return Some((Ok::<_, Infallible>(end()), None)),
            };
            let now = (view.last_seq(), view.run().version);
            let finished = view.run().state.is_terminal();
            if seen != Some(now) {
                seen = Some(now);
                let parts = json!({
                    "run-header": header(&view, &session).into_string(),
                    "run-timeline": timeline_part(&view).into_string(),
                    "run-approvals": run_parts::approvals(&view, &session).into_string(),
                });
                let event = SseEvent::default().event("update").data(parts.to_string());
                return Some((Ok(event), Some((state, session, id, seen))));
            }
            if finished {
                return Some((Ok(end()), None));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(stopping.bound(stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn end() -> SseEvent {
    SseEvent::default().event("end").data("{}")
}

#[derive(Debug, Deserialize)]
pub struct WorkflowLive {
    /// The digest of the part the page was rendered with.
    #[serde(default)]
    h: u64,
}

/// `GET /ui/live/workflow/{id}?h=`: `update` events with the workflow
/// page's live part (graph, agents, messages) whenever it changed; `end`
/// once the workflow has finished and that was sent.
pub async fn workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WorkflowLive>,
) -> Response {
    let stopping = state.stopping.clone();
    let stream = unfold(Some((state, id, q.h)), |s| async move {
        let (state, id, mut seen) = s?;
        loop {
            let Some((html, finished)) = super::workflow::live_now(&state, &id).await else {
                return Some((Ok::<_, Infallible>(end()), None));
            };
            let now = super::workflow::digest(&html);
            if now != seen {
                seen = now;
                let parts = json!({ "workflow-live": html });
                let event = SseEvent::default().event("update").data(parts.to_string());
                return Some((Ok(event), Some((state, id, seen))));
            }
            if finished {
                return Some((Ok(end()), None));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(stopping.bound(stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}
