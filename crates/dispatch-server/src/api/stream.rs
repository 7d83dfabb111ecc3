//! Streams: a run's events as server-sent events (its log: `logs.rs`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dispatch_core::RunId;
use dispatch_runtime::native::{TextDelta, deltas};
use dispatch_store::Event;
use futures_util::stream::unfold;
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::runs::{Params, params, resolve};
use super::{ApiError, ApiResult, AppState};
use super::{schemas, wire_runs};

/// How often a live stream looks for news.
pub(super) const POLL: Duration = Duration::from_millis(50);
/// Events read per query.
const PAGE: usize = 500;
/// Events answered at most by `?format=json`.
const JSON_PAGE: usize = 10_000;

/// Where an event stream is.
struct EventCursor {
    state: AppState,
    id: RunId,
    after: i64,
    pending: VecDeque<Event>,
    done: bool,
    /// Text a native agent generates in this process, as it arrives.
    deltas: broadcast::Receiver<TextDelta>,
}

enum Next {
    Event(Event),
    Delta(TextDelta),
}

/// `GET /v1/runs/{id}/events`: every event after `Last-Event-ID` (or
/// `?after=`), oldest first, each with its `seq` as the SSE id; the stream
/// ends after the run's last event once it has finished. `?format=json`
/// answers the events stored so far as one JSON document instead.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events",
    operation_id = "getRunEvents",
    tag = "runs",
    summary = "Events as server-sent events; resume with the Last-Event-ID header",
    description = "Each stored event is an SSE event named by its type, with its seq as the SSE id and the event as JSON data; `delta` events (no id) carry text a native agent generates. The stream ends after the run's last event once it has finished. With `format=json`, the events stored so far (at most 10000) as one document.",
    params(
        ("id" = String, Path, description = "run id or unique prefix"),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, description = "resume after this event seq"),
        schemas::EventsQuery,
    ),
    responses(
        (status = 200, description = "the events", content(
            (schemas::SseEvent = "text/event-stream"),
            (schemas::EventList = "application/json"),
        )),
        (status = 400, description = "`bad_request`: a bad `after`, `format` or Last-Event-ID; `ambiguous_id`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Params,
) -> ApiResult<Response> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["after", "format"])?;
    let id = resolve(&state, &id).await?;
    let from_header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event seq number"))
        })
        .transpose()?;
    let from_query = params
        .get("after")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("after={v}: expected a number")))
        })
        .transpose()?;
    let after = from_header.or(from_query).unwrap_or(0);
    if params.get("format").map(String::as_str) == Some("json") {
        let events = state.store.list_events(&id, after, JSON_PAGE).await?;
        let events = events.iter().map(super::wire::event).collect();
        return Ok(axum::Json(dispatch_api::EventList { events }).into_response());
    }
    Ok(event_stream(state, id, after))
}

/// The run's events after `after` as server-sent events, ending after its
/// last event once it has finished. Between them, `delta` events carry the
/// text a native agent running in this process generates, as it arrives
/// (not stored, so without an id: `Last-Event-ID` resumes stored events).
pub(super) fn event_stream(state: AppState, id: RunId, after: i64) -> Response {
    let cursor = EventCursor {
        state,
        id,
        after,
        pending: VecDeque::new(),
        done: false,
        deltas: deltas().subscribe(),
    };
    let stopping = cursor.state.stopping.clone();
    let stream = unfold(cursor, |mut c| async move {
        let next = next(&mut c).await?;
        let event = match next {
            Next::Event(event) => {
                c.after = event.seq;
                sse_event(&event)
            }
            Next::Delta(d) => SseEvent::default().event("delta").data(
                serde_json::to_string(&wire_runs::stream_delta(d)).unwrap_or_else(|_| "{}".into()),
            ),
        };
        Some((Ok::<_, Infallible>(event), c))
    });
    Sse::new(stopping.bound(stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The next thing to send: a stored event, or a delta of this run.
async fn next(c: &mut EventCursor) -> Option<Next> {
    loop {
        if let Some(event) = c.pending.pop_front() {
            return Some(Next::Event(event));
        }
        if c.done {
            return None;
        }
        match c.deltas.try_recv() {
            Ok(d) if d.run_id == c.id => return Some(Next::Delta(d)),
            Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => {}
        }
        {
            // The status first: a run that was finished before this read has
            // all its events in the read.
            let finished = match c.state.store.get_run(&c.id).await {
                Ok(run) => run.state.is_terminal(),
                Err(_) => true,
            };
            match c.state.store.list_events(&c.id, c.after, PAGE).await {
                Ok(events) if !events.is_empty() => c.pending.extend(events),
                Ok(_) if finished => c.done = true,
                Ok(_) => {
                    let wait = tokio::time::sleep(POLL);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            d = c.deltas.recv() => match d {
                                Ok(d) if d.run_id == c.id => return Some(Next::Delta(d)),
                                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => std::future::pending::<()>().await,
                            },
                        }
                    }
                }
                Err(_) => c.done = true,
            }
        }
    }
}

fn sse_event(event: &Event) -> SseEvent {
    let data =
        serde_json::to_string(&wire_runs::stream_event(event)).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .id(event.seq.to_string())
        .event(event.event.kind.clone())
        .data(data)
}
