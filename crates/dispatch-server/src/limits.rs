//! A server that holds up under idle, slow and many connections, before
//! any token is checked:
//!
//! - **Header-read timeout** (default 10 s, `--header-timeout`): a
//!   connection that has not sent a whole request head by then is closed —
//!   a new one, and an idle keep-alive one waiting for its next request
//!   alike (hyper starts the timer whenever it waits for a head). A slow
//!   body gets [`HttpLimits::body_timeout`] in all.
//! - **Connection cap** (`--max-connections`, default from the file
//!   limit): a connection over it is answered `503` at once and closed, so
//!   the process never runs out of descriptors and a real client that
//!   retries gets in as soon as the idle ones time out.
//! - **File limit**: the soft `RLIMIT_NOFILE` is raised to the hard one at
//!   start (Go's runtime and nginx's `worker_rlimit_nofile` do the same).
//! - **Per-token rate** (`--token-rate`, requests a second, bursts of ten
//!   seconds' worth): a token bucket per token; over it, `429` with
//!   `Retry-After`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::api::{ApiError, AppState, codes};

/// How much a server takes from its clients.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Open connections at most (`None`: from the file limit, at most 4096).
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long a client may take to send a whole request body.
    pub body_timeout: Duration,
    /// Requests a second one token may send (0: no limit).
    pub token_rate: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            token_rate: 100,
        }
    }
}

/// Descriptors kept for everything but connections (the database, run
/// logs, children's pipes).
const RESERVED_FDS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; the soft limit now.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Linux refuses more than fs.nr_open (1 Mi by default), even under an
    // unlimited hard limit.
    const MOST: u64 = 1 << 20;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let want = hard.min(MOST);
            if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
                want
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

impl HttpLimits {
    /// The connection cap under a file limit of `nofile`.
    pub fn connections(&self, nofile: u64) -> usize {
        let budget = (nofile.saturating_sub(RESERVED_FDS) / 2).clamp(16, 4096) as usize;
        self.max_connections.unwrap_or(budget).max(1)
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes,
/// then lets the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let nofile = raise_nofile();
    let cap = limits.connections(nofile);
    tracing::debug!(
        "[server] at most {cap} connections (file limit {nofile}), header timeout {:?}",
        limits.header_timeout
    );
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let body_timeout = limits.body_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection that died in the
                    // backlog: wait a little rather than spin.
                    tracing::warn!("[server] accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            busy(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = request.map(|body| timed(body, body_timeout));
            app.clone().oneshot(request)
        });
        let Some(acceptor) = tls.clone() else {
            let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                // A client that timed out or hung up: nothing to tell anyone.
                let _ = conn.await;
                drop(permit);
            });
            continue;
        };
        // TLS: the handshake runs on the connection's own task, under the
        // header timeout (a client that connects and says nothing holds a
        // slot no longer than one that sends no request head).
        let (watcher, http, handshake) = (graceful.watcher(), http.clone(), limits.header_timeout);
        tokio::spawn(async move {
            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                    let _ = conn.await;
                }
                Ok(Err(e)) => tracing::debug!("[server] TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("[server] TLS handshake with {peer} timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection over the cap with a 503 and closes it, without
/// waiting on the client.
fn busy(stream: &TcpStream) {
    const BODY: &str = r#"{"code":"unavailable","message":"the server has as many connections as it takes; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// The request body, cut off once `limit` has passed.
fn timed(body: Incoming, limit: Duration) -> Body {
    if body.is_end_stream() {
        return Body::new(body);
    }
    Body::new(Deadline {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limit)),
    })
}

struct Deadline {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body took too long to arrive".into())));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A token bucket per token.
#[derive(Debug)]
pub struct TokenRates {
    /// Requests a second (0: no limit).
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl TokenRates {
    /// `per_second` requests a second, in bursts of ten seconds' worth.
    pub fn new(per_second: u32) -> TokenRates {
        TokenRates {
            rate: f64::from(per_second),
            burst: f64::from(per_second) * 10.0,
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long to wait.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// Counts a request against its token's bucket (after the token was
/// checked: only live tokens have buckets).
pub async fn rate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.require_auth {
        return next.run(request).await;
    }
    // The token is the header's last word (the scheme came before it).
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().last())
        .map(crate::auth::hash);
    let Some(key) = token else {
        return next.run(request).await;
    };
    match state.token_rates.take(&key, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                format!(
                    "this token sent more requests than the server takes; retry in {seconds} s"
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_bucket_refills_at_its_rate_and_holds_ten_seconds() {
        let rates = TokenRates::new(2);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(rates.take("a", t0), Ok(()));
        }
        let wait = rates.take("a", t0).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(
            rates.take("b", t0),
            Ok(()),
            "another token has its own bucket"
        );
        assert_eq!(rates.take("a", t0 + Duration::from_millis(500)), Ok(()));
        assert!(rates.take("a", t0 + Duration::from_millis(500)).is_err());
        assert_eq!(TokenRates::new(0).take("a", t0), Ok(()), "0: no limit");
    }

    #[test]
    fn the_connection_cap_fits_the_file_limit() {
        let limits = HttpLimits::default();
        assert_eq!(limits.connections(512), 128);
        assert_eq!(limits.connections(1 << 20), 4096);
        assert_eq!(limits.connections(100), 16);
        let set = HttpLimits {
            max_connections: Some(3),
            ..HttpLimits::default()
        };
        assert_eq!(set.connections(1 << 20), 3);
    }
}
