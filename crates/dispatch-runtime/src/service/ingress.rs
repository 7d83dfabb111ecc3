//! HTTP ingress (hyper, HTTP/1.1): each accepted request becomes a wake.
//!
//! Checks, in order: header section larger than the limit → 431 (hyper itself
//! answers 431 when the head outgrows its buffer, and 400 to malformed
//! HTTP); wrong path → 404; method not allowed → 405 with `Allow`; missing or
//! wrong shared secret (`x-dispatch-secret`, or `Authorization: Bearer`,
//! compared as SHA-256 digests in constant time) → 401; body larger than the
//! limit → 413. Then the wake is admitted: 202 with the heartbeat run id,
//! 503 when the overlap policy drops it, 500 when the heartbeat could not be
//! created. Auth-bearing headers are redacted before anything is stored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};

use super::exec::{Reason, Reply, Wake};
use super::model::IngressPolicy;

/// Headers whose values never leave the listener.
pub(super) const REDACTED: [&str; 5] = [
    "authorization",
    "x-dispatch-secret",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

/// What every connection of one listener shares.
pub(super) struct Ingress {
    pub policy: IngressPolicy,
    pub secret_digest: Option<Vec<u8>>,
    /// The bound address, as put in each envelope.
    pub listener: String,
    pub wakes: mpsc::Sender<Wake>,
    pub rejected: AtomicU64,
    /// Told about each rejection, so the helper saves the count (debounced).
    pub rejections: Notify,
}

impl Ingress {
    pub fn new(policy: IngressPolicy, listener: String, wakes: mpsc::Sender<Wake>) -> Self {
        let secret_digest = policy
            .secret_sha256
            .as_deref()
            .and_then(|h| hex::decode(h).ok());
        Ingress {
            policy,
            secret_digest,
            listener,
            wakes,
            rejected: AtomicU64::new(0),
            rejections: Notify::new(),
        }
    }

    fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejections.notify_one();
    }
}

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: TcpListener, ingress: Arc<Ingress>) {
    let buf = (ingress.policy.max_header_bytes as usize + 4096).max(8192);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                eprintln!("[dispatch] listener: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ingress = ingress.clone();
        tokio::spawn(async move {
            let ing = ingress.clone();
            let svc = service_fn(move |req| handle(req, ing.clone(), remote));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(buf)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            // Malformed or oversized heads never reach `handle`: hyper
            // answers them (400 / 431) and ends the connection.
            if served.is_err_and(|e| e.is_parse() || e.is_parse_too_large()) {
                ingress.reject();
            }
        });
    }
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    respond(status, json!({"code": code, "message": message}))
}

async fn handle(
    req: Request<Incoming>,
    ing: Arc<Ingress>,
    remote: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = check_and_admit(req, &ing, remote).await;
    if resp.status() != StatusCode::ACCEPTED {
        ing.reject();
    }
    Ok(resp)
}

async fn check_and_admit(
    req: Request<Incoming>,
    ing: &Ingress,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let p = &ing.policy;
    let header_bytes: u64 = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum();
    if header_bytes > p.max_header_bytes {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("the headers exceed {} bytes", p.max_header_bytes),
        );
    }
    if p.path
        .as_deref()
        .is_some_and(|path| path != req.uri().path())
    {
        return error(StatusCode::NOT_FOUND, "not_found", "no such path");
    }
    let method = req.method().as_str().to_string();
    if !p.methods.is_empty() && !p.methods.contains(&method) {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("use {}", p.methods.join(", ")),
        );
        if let Ok(v) = HeaderValue::from_str(&p.methods.join(", ")) {
            r.headers_mut().insert(ALLOW, v);
        }
        return r;
    }
    if let Some(expected) = &ing.secret_digest
        && !authorized(&req, expected)
    {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong shared secret (x-dispatch-secret or Authorization: Bearer)",
        );
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the body exceeds {} bytes", p.max_body_bytes),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > p.max_body_bytes) {
        return too_large();
    }
    let request = envelope(&req, &ing.listener, remote);
    let body = match Limited::new(req.into_body(), p.max_body_bytes as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the body could not be read",
            );
        }
    };
    let mut request = request;
    request["body"] = json!(String::from_utf8_lossy(&body));
    let (tx, rx) = oneshot::channel();
    let wake = Wake {
        reason: Reason::Http,
        detail: json!({}),
        payload: Value::Null,
        request: Some(request),
        timer: None,
        reply: Some(tx),
    };
    let stopping = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the service is stopping",
        )
    };
    if ing.wakes.send(wake).await.is_err() {
        return stopping();
    }
    match rx.await {
        Ok(Reply::Accepted(id)) => respond(
            StatusCode::ACCEPTED,
            json!({"run_id": id, "status": "accepted"}),
        ),
        Ok(Reply::Busy(why)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "busy", &why);
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        }
        Ok(Reply::Failed(why)) => error(StatusCode::INTERNAL_SERVER_ERROR, "wake_failed", &why),
        Err(_) => stopping(),
    }
}

/// Whether the request presents the shared secret whose SHA-256 is `expected`.
fn authorized(req: &Request<Incoming>, expected: &[u8]) -> bool {
    let h = req.headers();
    let presented = h
        .get("x-dispatch-secret")
        .map(HeaderValue::as_bytes)
        .or_else(|| {
            h.get(hyper::header::AUTHORIZATION)
                .map(HeaderValue::as_bytes)
                .and_then(|v| {
                    let (scheme, rest) = v.split_at(v.len().min(7));
                    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
                })
        });
    let Some(presented) = presented else {
        return false;
    };
    let digest = Sha256::digest(presented);
    digest.as_slice().ct_eq(expected).into()
}

/// The request as the agent sees it (the body is added once read).
fn envelope(req: &Request<Incoming>, listener: &str, remote: SocketAddr) -> Value {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let name = name.as_str().to_ascii_lowercase();
        let value = if REDACTED.contains(&name.as_str()) {
            "[redacted]".to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match headers.get_mut(&name) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name, Value::String(value));
            }
        }
    }
    json!({
        "listener": listener,
        "remote_addr": remote.to_string(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "headers": headers,
    })
}
