//! HTTP ingress (hyper, HTTP/1.1): each accepted request becomes a wake.
//!
//! The checks are `check`'s (shared with the cluster servers' hooks); hyper
//! itself answers 431 when the head outgrows its buffer, and 400 to
//! malformed HTTP. Then the wake is admitted: 202 with the heartbeat run id,
//! 503 when the overlap policy drops it, 500 when the heartbeat could not be
//! created.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};

use super::a2a::{A2aAgent, Body};
use super::check::{self, Rejection};
use super::exec::{Reason, Reply, Wake};
use super::model::IngressPolicy;
use super::signature::{self, SeenDeliveries, Verifier};

/// What every connection of one listener shares.
pub(super) struct Ingress {
    pub policy: IngressPolicy,
    pub secret_digest: Option<Vec<u8>>,
    /// Checks each request's signature (`LISTEN_SIGNATURE`).
    pub verifier: Option<Verifier>,
    /// The signed deliveries taken, for replay refusal.
    pub seen: SeenDeliveries,
    /// The bound address, as put in each envelope.
    pub listener: String,
    pub wakes: mpsc::Sender<Wake>,
    pub rejected: AtomicU64,
    /// Told about each rejection, so the helper saves the count (debounced).
    pub rejections: Notify,
    /// `serve --a2a`: the listener is an A2A agent.
    pub a2a: Option<Arc<A2aAgent>>,
}

impl Ingress {
    /// The ingress of `policy`; the one line to say when its signing key is
    /// not in this process's environment.
    pub fn new(
        policy: IngressPolicy,
        listener: String,
        wakes: mpsc::Sender<Wake>,
    ) -> Result<Self, String> {
        let secret_digest = check::secret_digest(&policy);
        let verifier = policy
            .signature
            .as_ref()
            .map(Verifier::from_env)
            .transpose()?;
        Ok(Ingress {
            policy,
            secret_digest,
            verifier,
            seen: SeenDeliveries::default(),
            listener,
            wakes,
            rejected: AtomicU64::new(0),
            rejections: Notify::new(),
            a2a: None,
        })
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
                crate::say_warn!("[dispatch] listener: cannot accept: {e}");
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
) -> Result<Response<Body>, Infallible> {
    if let Some(agent) = &ing.a2a {
        let resp = super::a2a::handle(req, &ing, agent, remote).await;
        if resp.status().is_client_error() {
            ing.reject();
        }
        return Ok(resp);
    }
    let resp = check_and_admit(req, &ing, remote).await;
    if resp.status() != StatusCode::ACCEPTED {
        ing.reject();
    }
    Ok(resp.map(BodyExt::boxed))
}

fn rejected(r: Rejection) -> Response<Full<Bytes>> {
    let mut resp = respond(r.status, r.body());
    for (name, value) in r.headers {
        resp.headers_mut().insert(name, value);
    }
    resp
}

async fn check_and_admit(
    req: Request<Incoming>,
    ing: &Ingress,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let p = &ing.policy;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if let Err(r) = check::check_head(
        p,
        ing.secret_digest.as_deref(),
        &parts.method,
        path,
        &parts.headers,
    ) {
        return rejected(r);
    }
    let body = match Limited::new(body, p.max_body_bytes as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return rejected(check::body_too_large(p));
        }
        Err(_) => return rejected(check::bad_body()),
    };
    let mut delivery = None;
    if let Some(v) = &ing.verifier {
        let now = dispatch_core::now_ms();
        match v.verify(&parts.headers, &body, now) {
            Ok(d) if ing.seen.claim(&d, now) => delivery = Some(d),
            Ok(_) => return rejected(signature::replayed()),
            Err(r) => return rejected(r),
        }
    }
    let resp = admit(ing, remote, &parts, &body).await;
    // A refused wake (busy, stopping) leaves the delivery for the sender's retry.
    if let Some(d) = delivery.filter(|_| resp.status() != StatusCode::ACCEPTED) {
        ing.seen.release(&d);
    }
    resp
}

async fn admit(
    ing: &Ingress,
    remote: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let path = parts.uri.path();
    let request = check::envelope(
        &ing.listener,
        &remote.to_string(),
        &parts.method,
        path,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        body,
    );
    let (tx, rx) = oneshot::channel();
    let wake = Wake {
        reason: Reason::Http,
        detail: json!({}),
        payload: Value::Null,
        request: Some(request),
        timer: None,
        session: None,
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
