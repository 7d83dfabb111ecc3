//! A run's log on its page: the tail first (a big log is never sent whole),
//! earlier parts a page at a time, and what is appended live over SSE, all
//! read through `api::logs::LogTail` like `GET /v1/runs/{id}/logs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dispatch_core::RunId;
use futures_util::stream::unfold;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Session;
use crate::api::logs::LogTail;
use crate::api::runs::resolve;
use crate::api::{ApiResult, AppState};

/// How much of the log a page shows at once.
pub const WINDOW: u64 = 64 * 1024;
/// How often the live log looks for more.
const POLL: Duration = Duration::from_millis(200);
/// The most bytes one live message carries.
const CHUNK: usize = 64 * 1024;

/// A window of the log: bytes `start..end` of `total`.
#[derive(Debug)]
pub struct Window {
    pub text: String,
    pub start: u64,
    pub end: u64,
    pub total: u64,
}

/// The window of `id`'s log that ends at `before` (default: its end),
/// starting at a line boundary when it does not start at 0.
pub async fn window(state: &AppState, id: &RunId, before: Option<u64>) -> ApiResult<Window> {
    let mut tail = LogTail::new(state.clone(), id.clone());
    let total = tail.length().await?;
    let end = before.unwrap_or(total).min(total);
    let start = end.saturating_sub(WINDOW);
    tail.seek(start);
    let mut bytes = tail.read_at_most((end - start) as usize).await?;
    let mut start = start;
    if start > 0
        && let Some(nl) = bytes.iter().position(|b| *b == b'\n')
        && nl + 1 < bytes.len()
    {
        bytes.drain(..=nl);
        start += nl as u64 + 1;
    }
    Ok(Window {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        start,
        end: start + bytes.len() as u64,
        total,
    })
}

/// The log section: the window, a link to the part before it, and the
/// live follower while the run is going and the window is the tail.
pub fn section(id: &RunId, w: &Window, live: bool) -> Markup {
    let at_tail = w.end == w.total;
    html! {
        div.log-head.actions {
            @if w.start > 0 {
                a href={ "/ui/runs/" (id) "?log_before=" (w.start) "#log" } { "« Earlier" }
            }
            @if !at_tail { a href={ "/ui/runs/" (id) "#log" } { "Latest »" } }
            span.muted {
                "bytes " (w.start) "–" (w.end) " of " (w.total)
            }
            @if live && at_tail {
                label { input #follow type="checkbox" checked; " follow" }
            }
        }
        pre.log #log tabindex="0" aria-label="Log"
            data-live-log=[(live && at_tail).then(|| format!("/ui/live/runs/{id}/log?offset={}", w.end))] {
            (w.text)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    offset: u64,
}

/// `GET /ui/live/runs/{id}/log?offset=N`: what is appended after byte `N`,
/// as SSE `chunk` events (JSON strings), then `end` once the run has
/// finished and its whole log was sent.
pub async fn live(
    State(state): State<AppState>,
    Extension(_session): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let id = match resolve(&state, &id).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let mut tail = LogTail::new(state.clone(), id.clone());
    tail.seek(q.offset);
    let stopping = state.stopping.clone();
    let stream = unfold(Some((tail, state, id)), |s| async move {
        let (mut tail, state, id) = s?;
        loop {
            let finished = match state.store.get_run(&id).await {
                Ok(run) => run.state.is_terminal(),
                Err(_) => true,
            };
            match tail.read_at_most(CHUNK).await {
                Ok(chunk) if !chunk.is_empty() => {
                    let text = String::from_utf8_lossy(&chunk).into_owned();
                    let data = serde_json::to_string(&text).unwrap_or_default();
                    let event = SseEvent::default().event("chunk").data(data);
                    return Some((Ok::<_, Infallible>(event), Some((tail, state, id))));
                }
                Ok(_) if !finished => tokio::time::sleep(POLL).await,
                _ => {
                    let end = SseEvent::default().event("end").data("{}");
                    return Some((Ok(end), None));
                }
            }
        }
    });
    Sse::new(stopping.bound(stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}
