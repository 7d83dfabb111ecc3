//! The mock's HTTP side: axum on a loopback port, the record of what it
//! received, and the control endpoints (`/_mock/…`) for a mock running as
//! its own process.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::respond::{self, Format, Route};
use super::script::{Script, Step};

/// Requests bigger than this are refused (413), as a real server would.
const MAX_BODY_BYTES: usize = 32 << 20;

/// One request the mock received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// `/v1/chat/completions`, `/v1/responses`, `/v1/messages`, or
    /// `/v1beta/models/{model}:streamGenerateContent` (Gemini).
    pub path: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Null` when the script does not record bodies (or
    /// the body was not JSON).
    pub body: Value,
    /// Unix microseconds when the request arrived.
    pub received_at_us: u64,
    /// Unix microseconds when its first text or tool-call fragment was
    /// handed to the connection (`None`: none was, e.g. an error answer).
    pub first_token_sent_at_us: Option<u64>,
    /// Unix microseconds when the whole answer (its terminator included)
    /// was handed to the connection: the call completed, as far as the
    /// provider knows (`None`: an error, a cut, a stall, or a client that
    /// went away first).
    #[serde(default)]
    pub finished_at_us: Option<u64>,
}

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the handlers share.
pub(super) struct Inner {
    steps: Mutex<VecDeque<Step>>,
    fallback: Step,
    record_bodies: bool,
    received: Mutex<Vec<Received>>,
    /// Changes (closes) when the [`MockServer`] is dropped.
    stop: watch::Receiver<()>,
}

impl Inner {
    /// The next step of the script, or the fallback.
    pub(super) fn next_step(&self) -> Step {
        lock(&self.steps)
            .pop_front()
            .unwrap_or_else(|| self.fallback.clone())
    }

    /// Records a request; returns its number (its index in the record).
    pub(super) fn record(&self, path: &str, headers: &HeaderMap, body: &Value) -> usize {
        let r = Received {
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), v)
                })
                .collect(),
            body: if self.record_bodies {
                body.clone()
            } else {
                Value::Null
            },
            received_at_us: now_us(),
            first_token_sent_at_us: None,
            finished_at_us: None,
        };
        let mut received = lock(&self.received);
        received.push(r);
        received.len() - 1
    }

    /// Notes that request `seq`'s first fragment is leaving now.
    pub(super) fn first_token(&self, seq: usize) {
        let at = now_us();
        if let Some(r) = lock(&self.received).get_mut(seq) {
            r.first_token_sent_at_us.get_or_insert(at);
        }
    }

    /// Notes that request `seq`'s whole answer has left.
    pub(super) fn finished(&self, seq: usize) {
        let at = now_us();
        if let Some(r) = lock(&self.received).get_mut(seq) {
            r.finished_at_us.get_or_insert(at);
        }
    }

    /// Resolves when the server is being dropped.
    pub(super) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            // Err: the sender is gone, which is the signal.
            let _ = stop.changed().await;
        }
    }
}

/// A running mock. Dropped, it stops listening, ends the answers still
/// streaming (stalled ones included) and closes its connections.
pub struct MockServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// Served over TLS: the directory of its CA's PEM file.
    tls: Option<tempfile::TempDir>,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish()
    }
}

impl MockServer {
    /// Serves `script` on `127.0.0.1` on a free port.
    pub async fn start(script: Script) -> std::io::Result<MockServer> {
        MockServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    /// Serves `script` on `addr` (port 0: a free one), in a tokio task.
    pub async fn start_on(addr: SocketAddr, script: Script) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (inner, app, stop_tx) = MockServer::app(script);
        // Small writes (one event each) leave at once, not after Nagle's wait.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stopping = inner.stopping();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopping)
                .await;
        });
        Ok(MockServer {
            addr,
            inner,
            tls: None,
            _stop: stop_tx,
        })
    }

    /// Serves `script` on `addr` over TLS, as the providers are reached:
    /// HTTP/2 when the client offers it (ALPN `h2`), else HTTP/1.1, with a
    /// certificate for `127.0.0.1` signed by a CA made here ([`Self::ca_pem`]
    /// is what a client trusts, e.g. through `DISPATCH_CACERT`). Unlike the
    /// providers' frontends it sets no limit on the streams of a connection.
    pub async fn start_tls_on(addr: SocketAddr, script: Script) -> std::io::Result<MockServer> {
        MockServer::start_tls_capped(addr, script, None).await
    }

    /// [`Self::start_tls_on`], allowing each HTTP/2 connection at most
    /// `streams` at once (`SETTINGS_MAX_CONCURRENT_STREAMS`), as providers'
    /// frontends do; `None`: no limit.
    pub async fn start_tls_capped(
        addr: SocketAddr,
        script: Script,
        streams: Option<u32>,
    ) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let dir = tempfile::tempdir()?;
        let alpn = [b"h2".to_vec(), b"http/1.1".to_vec()];
        let config =
            crate::tls_proxy::certificates(dir.path(), &alpn).map_err(std::io::Error::other)?;
        let (inner, app, stop_tx) = MockServer::app(script);
        tokio::spawn(super::tls::serve(
            listener,
            config,
            app,
            inner.clone(),
            streams,
        ));
        Ok(MockServer {
            addr,
            inner,
            tls: Some(dir),
            _stop: stop_tx,
        })
    }

    /// The state and routes of a mock serving `script`.
    fn app(script: Script) -> (Arc<Inner>, Router, watch::Sender<()>) {
        let (stop_tx, stop_rx) = watch::channel(());
        let inner = Arc::new(Inner {
            steps: Mutex::new(script.steps.into()),
            fallback: script.fallback,
            record_bodies: script.record_bodies,
            received: Mutex::new(Vec::new()),
            stop: stop_rx,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/responses", post(responses))
            .route("/v1/messages", post(anthropic))
            .route("/v1beta/models/{*action}", post(gemini))
            .route("/_mock/requests", get(requests))
            .route("/_mock/steps", post(push_steps))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(inner.clone());
        (inner, app, stop_tx)
    }

    /// The PEM file of the CA a TLS mock's certificate is signed by (none
    /// for a plain one).
    pub fn ca_pem(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(|d| d.path().join("ca.pem"))
    }

    fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "https",
            None => "http",
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1` (`https://` over TLS): what a MODEL's
    /// BASE_URL or LLM_BASE_URL takes.
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme(), self.addr)
    }

    /// `http://127.0.0.1:PORT/v1beta`: what a Gemini MODEL's BASE_URL takes.
    pub fn gemini_base_url(&self) -> String {
        format!("{}://{}/v1beta", self.scheme(), self.addr)
    }

    /// Every model request received, in order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// How many model requests arrived (cheaper than `requests().len()`).
    pub fn request_count(&self) -> usize {
        lock(&self.inner.received).len()
    }

    /// Appends a step to the script.
    pub fn push(&self, step: Step) {
        lock(&self.inner.steps).push_back(step);
    }
}

/// The body, or why it could not be read (too big): answered in the provider's error shape.
type RawBody = Result<Bytes, BytesRejection>;

async fn openai(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: RawBody) -> Response {
    let route = Route::of(Format::OpenAi, "/v1/chat/completions");
    respond::answer(inner, route, headers, body).await
}

async fn responses(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: RawBody) -> Response {
    let route = Route::of(Format::Responses, "/v1/responses");
    respond::answer(inner, route, headers, body).await
}

async fn anthropic(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: RawBody) -> Response {
    let route = Route::of(Format::Anthropic, "/v1/messages");
    respond::answer(inner, route, headers, body).await
}

/// `models/{model}:generateContent` or `:streamGenerateContent` (streamed as
/// SSE, as with `?alt=sse`); any other method is a 404 in Google's shape.
async fn gemini(
    State(inner): State<Arc<Inner>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Response {
    let path = format!("/v1beta/models/{action}");
    let (model, stream) = match action.rsplit_once(':') {
        Some((model, "streamGenerateContent")) => (model, true),
        Some((model, "generateContent")) => (model, false),
        _ => {
            let message = format!(
                "the mock model server has no POST {path}; Gemini's are models/<model>:generateContent and :streamGenerateContent"
            );
            let body = super::gemini::error(404, &message);
            return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
        }
    };
    let route = Route {
        format: Format::Gemini,
        path: path.clone(),
        model: Some(model.to_string()),
        stream: Some(stream),
    };
    respond::answer(inner, route, headers, body).await
}

/// `GET /_mock/requests`: the [`Received`] list as a JSON array.
async fn requests(State(inner): State<Arc<Inner>>) -> Response {
    let all = lock(&inner.received).clone();
    axum::Json(all).into_response()
}

/// One step or an array of steps.
#[derive(Deserialize)]
#[serde(untagged)]
enum Steps {
    Many(Vec<Step>),
    One(Step),
}

/// `POST /_mock/steps`: appends a step (a JSON object) or steps (an array).
async fn push_steps(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let steps = match serde_json::from_slice::<Steps>(&body) {
        Ok(Steps::Many(steps)) => steps,
        Ok(Steps::One(step)) => vec![step],
        Err(_) => {
            // Untagged errors say nothing: say why the form the body has failed.
            let one = body.trim_ascii_start().starts_with(b"{");
            let why = if one {
                serde_json::from_slice::<Step>(&body).err()
            } else {
                serde_json::from_slice::<Vec<Step>>(&body).err()
            };
            let why = why.map_or_else(String::new, |e| e.to_string());
            let message = format!("the body is not a mock step or an array of steps: {why}");
            let body = json!({"error": {"code": "bad_steps", "message": message}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let mut queue = lock(&inner.steps);
    queue.extend(steps);
    axum::Json(json!({"queued": queue.len()})).into_response()
}

/// Anything else: a 404 in OpenAI's error shape that names what is served.
async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!(
        "the mock model server has no {method} {}; it serves POST /v1/chat/completions \
         (OpenAI Chat Completions), POST /v1/responses (OpenAI Responses), POST /v1/messages \
         (Anthropic) and POST /v1beta/models/<model>:streamGenerateContent (Gemini): does \
         the base URL end in /v1 (or /v1beta for Gemini)?",
        uri.path()
    );
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "unknown_url"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
