//! The mock's HTTP side: axum on a loopback port.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::script::{Script, Step};
use super::wire::{self, End, Format};

/// One request the mock received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Received {
    pub path: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// `Null` when the script does not record bodies.
    pub body: Value,
    /// Unix microseconds when the request arrived.
    pub received_at_us: u64,
    /// Unix microseconds when its first text or tool fragment was written.
    pub first_token_sent_at_us: Option<u64>,
}

struct Inner {
    steps: Mutex<VecDeque<Step>>,
    fallback: Step,
    record_bodies: bool,
    received: Mutex<Vec<Received>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A running mock; dropped, it stops accepting requests.
pub struct MockServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Serves `script` on `127.0.0.1:0`.
    pub async fn start(script: Script) -> std::io::Result<MockServer> {
        MockServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    pub async fn start_on(addr: SocketAddr, script: Script) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            steps: Mutex::new(script.steps.into()),
            fallback: script.fallback,
            record_bodies: script.record_bodies,
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/_mock/requests", get(requests))
            .route("/_mock/steps", post(push_steps))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockServer { addr, inner, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`: what a MODEL's BASE_URL or LLM_BASE_URL takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// Appends a step to the script.
    pub fn push(&self, step: Step) {
        lock(&self.inner.steps).push_back(step);
    }
}

async fn requests(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(json!({ "requests": lock(&inner.received).clone() })).into_response()
}

async fn push_steps(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Step>>(&body) {
        Ok(steps) => {
            lock(&inner.steps).extend(steps);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn openai(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(inner, Format::OpenAi, "/v1/chat/completions", headers, body).await
}

async fn anthropic(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(inner, Format::Anthropic, "/v1/messages", headers, body).await
}

async fn answer(
    inner: Arc<Inner>,
    format: Format,
    path: &str,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let at = now_us();
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => {
            let b = wire::error_body(format, 400, &format!("the body is not JSON: {e}"));
            return (StatusCode::BAD_REQUEST, axum::Json(b)).into_response();
        }
    };
    let index = {
        let mut received = lock(&inner.received);
        received.push(Received {
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: if inner.record_bodies {
                body.clone()
            } else {
                Value::Null
            },
            received_at_us: at,
            first_token_sent_at_us: None,
        });
        received.len() - 1
    };
    let step = lock(&inner.steps)
        .pop_front()
        .unwrap_or_else(|| inner.fallback.clone());
    if step.delay_ms() > 0 {
        tokio::time::sleep(Duration::from_millis(step.delay_ms())).await;
    }
    let assistant = body["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count());
    let step = step.resolve(assistant);
    let model = body["model"].as_str().unwrap_or("mock").to_string();
    let input_est = (raw.len() as u64).div_ceil(4);
    match &step {
        Step::Error {
            status,
            retry_after,
            message,
            ..
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (
                status,
                axum::Json(wire::error_body(format, status.as_u16(), message)),
            )
                .into_response();
            if let Some(s) = retry_after
                && let Ok(v) = s.to_string().parse()
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Step::Garbage { body, .. } => {
            let text = format!("data: {body}\n\n");
            return ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response();
        }
        _ => {}
    }
    if body["stream"] != true {
        return axum::Json(wire::whole(format, &step, &model, input_est)).into_response();
    }
    let include_usage =
        format == Format::Anthropic || body["stream_options"]["include_usage"] == true;
    let (frames, end) = wire::stream(format, &step, &model, include_usage, input_est);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(8);
    tokio::spawn(async move {
        for f in frames {
            if f.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
            }
            let first = f.content;
            if tx.send(Ok(Bytes::from(f.data))).await.is_err() {
                return; // the client went away
            }
            if first {
                let mut received = lock(&inner.received);
                if let Some(r) = received
                    .get_mut(index)
                    .filter(|r| r.first_token_sent_at_us.is_none())
                {
                    r.first_token_sent_at_us = Some(now_us());
                }
            }
        }
        if end == End::Stall {
            tx.closed().await;
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
