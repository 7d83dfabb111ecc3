//! Answering one model request: record it, take the next step, wait its
//! delay, then send the step in the request's wire format, streamed (one
//! frame at a time, with the step's delays) or whole.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::answer::{Answer, End, Frame, Meta, estimate_tokens};
use super::script::Step;
use super::server::{Inner, now_us};
use super::{anthropic, gemini, openai, responses};

/// Which wire format a request came in (and is answered in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    OpenAi,
    Responses,
    Anthropic,
    Gemini,
}

/// Where a request came: its format, its path, and what Gemini says in
/// the path rather than the body (the model, and streaming or not).
#[derive(Clone, Debug)]
pub(super) struct Route {
    pub format: Format,
    pub path: String,
    /// Gemini's `models/{model}:…`.
    pub model: Option<String>,
    /// Gemini's `:streamGenerateContent` (`None`: the body's `stream` says).
    pub stream: Option<bool>,
}

impl Route {
    pub(super) fn of(format: Format, path: &str) -> Route {
        Route {
            format,
            path: path.to_string(),
            model: None,
            stream: None,
        }
    }
}

impl Format {
    fn error(self, status: StatusCode, message: &str) -> Response {
        let body = match self {
            Format::OpenAi | Format::Responses => openai::error(status.as_u16(), message),
            Format::Anthropic => anthropic::error(status.as_u16(), message),
            Format::Gemini => gemini::error(status.as_u16(), message),
        };
        (status, axum::Json(body)).into_response()
    }

    fn invalid(self, body: &Value) -> Option<String> {
        match self {
            Format::OpenAi => openai::invalid(body),
            Format::Responses => responses::invalid(body),
            Format::Anthropic => anthropic::invalid(body),
            Format::Gemini => gemini::invalid(body),
        }
    }

    /// Whether the request offers the format's hosted web search tool
    /// (Chat Completions has none).
    fn offers_web_search(self, body: &Value) -> bool {
        match self {
            Format::OpenAi => false,
            Format::Responses => responses::offers_web_search(body),
            Format::Anthropic => anthropic::offers_web_search(body),
            Format::Gemini => gemini::offers_web_search(body),
        }
    }

    /// How many turns the model already took in the request's conversation.
    fn assistant_turns(self, body: &Value) -> usize {
        match self {
            Format::OpenAi | Format::Anthropic => body["messages"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count()),
            Format::Responses => responses::assistant_turns(body),
            Format::Gemini => gemini::assistant_turns(body),
        }
    }
}

/// The key a request carried (`Authorization: Bearer …`, `x-api-key` or `x-goog-api-key`).
fn api_key(headers: &HeaderMap) -> String {
    let text = |v: &HeaderValue| v.to_str().ok().map(str::to_string);
    let bearer = headers.get(header::AUTHORIZATION).and_then(text);
    bearer
        .map(|v| v.trim_start_matches("Bearer ").to_string())
        .or_else(|| headers.get("x-api-key").and_then(text))
        .or_else(|| headers.get("x-goog-api-key").and_then(text))
        .unwrap_or_default()
}

/// Answers one request to `route`'s endpoint.
pub(super) async fn answer(
    inner: Arc<Inner>,
    route: Route,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let format = route.format;
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => return format.error(e.status(), &e.body_text()),
    };
    let parsed = serde_json::from_slice::<Value>(&raw);
    let body = parsed.as_ref().unwrap_or(&Value::Null);
    let seq = inner.record(&route.path, &headers, body);
    let body = match parsed {
        Ok(body) => body,
        Err(e) => {
            let message = format!("the request body is not valid JSON: {e}");
            return format.error(StatusCode::BAD_REQUEST, &message);
        }
    };
    if let Some(message) = format.invalid(&body) {
        return format.error(StatusCode::BAD_REQUEST, &message);
    }
    let step = inner.next_step().resolve(format.assistant_turns(&body));
    if let Step::Text { searches, .. } = &step
        && !searches.is_empty()
        && !format.offers_web_search(&body)
    {
        // The real API cannot search when the request offers no search tool.
        let message = "the script searches the web, but the request offers no web search tool";
        return format.error(StatusCode::BAD_REQUEST, message);
    }
    let delay = Duration::from_millis(step.delay_ms());
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.stopping() => {
                return format.error(StatusCode::SERVICE_UNAVAILABLE, "the mock is shutting down");
            }
        }
    }
    match &step {
        Step::Error {
            status,
            retry_after,
            message,
            ..
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // As real providers do: a refused key is quoted back.
            let message = message.replace("{api_key}", &api_key(&headers));
            let mut r = format.error(status, &message);
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            return r;
        }
        Step::Page {
            content_type, body, ..
        } => {
            let ct = HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("text/html"));
            return ([(header::CONTENT_TYPE, ct)], body.clone()).into_response();
        }
        Step::Garbage { body, .. } => {
            let data: String = body.lines().map(|l| format!("data: {l}\n\n")).collect();
            return event_stream(Body::from(data));
        }
        _ => {}
    }
    let model = route
        .model
        .as_deref()
        .or(body["model"].as_str())
        .unwrap_or("mock");
    let meta = Meta {
        model,
        seq,
        created: now_us() / 1_000_000,
    };
    let answer = Answer::plan(&step, estimate_tokens(raw.len()));
    let feed = |frames: Vec<Frame>| Feed {
        frames: frames.into(),
        end: answer.end,
        inner: inner.clone(),
        seq,
        first_sent: false,
    };
    if route.stream.unwrap_or(body["stream"] == true) {
        let frames = match format {
            Format::OpenAi => {
                let usage = body["stream_options"]["include_usage"] == true;
                openai::stream(&answer, meta, usage)
            }
            Format::Responses => responses::stream(&answer, meta),
            Format::Anthropic => anthropic::stream(&answer, meta),
            Format::Gemini => gemini::stream(&answer, meta),
        };
        return event_stream(feed(frames).into_body());
    }
    let whole = match format {
        Format::OpenAi => openai::whole(&answer, meta),
        Format::Responses => responses::whole(&answer, meta),
        Format::Anthropic => anthropic::whole(&answer, meta),
        Format::Gemini => gemini::whole(&answer, meta),
    };
    match answer.end {
        End::Finish(_) => {
            if !answer.text.is_empty() || !answer.calls.is_empty() {
                inner.first_token(seq);
            }
            inner.finished(seq);
            axum::Json(whole).into_response()
        }
        // Headers, then nothing (a stall) or half the JSON (a cut).
        End::Stall | End::Cut => {
            let frames = if answer.end == End::Cut {
                let mut text = whole.to_string();
                let mut half = text.len() / 2;
                while !text.is_char_boundary(half) {
                    half -= 1;
                }
                text.truncate(half);
                vec![Frame::new(text, false, 0)]
            } else {
                Vec::new()
            };
            let body = feed(frames).into_body();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

fn event_stream(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A body sent one frame at a time, each after its delay; then, for a
/// stall, nothing until the client goes away (which drops the body) or the
/// server stops.
struct Feed {
    frames: VecDeque<Frame>,
    end: End,
    inner: Arc<Inner>,
    seq: usize,
    first_sent: bool,
}

impl Feed {
    fn into_body(self) -> Body {
        let stream = futures_util::stream::unfold(self, |mut feed| async move {
            let Some(frame) = feed.frames.pop_front() else {
                match feed.end {
                    End::Stall => feed.inner.stopping().await,
                    End::Finish(_) => feed.inner.finished(feed.seq),
                    End::Cut => {}
                }
                return None;
            };
            if frame.delay_ms > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(frame.delay_ms)) => {}
                    () = feed.inner.stopping() => return None,
                }
            }
            if frame.content && !feed.first_sent {
                feed.first_sent = true;
                feed.inner.first_token(feed.seq);
            }
            Some((Ok::<_, Infallible>(Bytes::from(frame.data)), feed))
        });
        Body::from_stream(stream)
    }
}
