//! The egress proxy of `NETWORK allow <host>` (issue #35).
//!
//! A run whose parcel lists hosts has its sandboxed processes (a process
//! agent, a native agent's LOCAL tools and MCP servers) in a network
//! namespace holding only loopback ([`crate::sandbox::Plan::isolate_network`]).
//! This proxy listens there, on `127.0.0.1:<port>`, and is served from the
//! helper's (or worker's) own namespace: the processes' only way out. Their
//! environment names it (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and the
//! lowercase forms; `NO_PROXY` keeps their own loopback direct).
//!
//! It speaks HTTP/1.1 (hyper): `CONNECT host:port` opens a tunnel (what
//! clients do for `https://`, and for anything with `--proxytunnel`), and
//! a request with an absolute `http://` URI is forwarded. Either only to a
//! host the parcel lists (any port); any other host gets a 403 saying so.
//! Names are resolved here, by the helper's resolver: the processes need
//! no DNS. Each decision is a `network` event of the run (`host`, `port`,
//! `method`, `allowed`, and `error` when an allowed host could not be
//! reached), written by the runtime, never by the agent.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use dispatch_core::{EventKind, NewEvent, now_ms};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The decisions kept for the run's events between two drains; beyond, they
/// are counted (an agent in a loop does not fill the store).
const MAX_PENDING: usize = 1000;

type Body = BoxBody<Bytes, hyper::Error>;

/// The decisions not yet written as events.
#[derive(Default)]
struct Pending {
    events: Vec<NewEvent>,
    dropped: u64,
}

/// Where the proxy's decisions wait until the attempt's event pump (or its
/// end) writes them.
#[derive(Clone)]
pub(crate) struct Recorder {
    pending: Arc<Mutex<Pending>>,
    attempt: u32,
}

impl Recorder {
    fn record(&self, data: serde_json::Value) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.events.len() < MAX_PENDING {
            true => p.events.push(NewEvent::new(
                EventKind::Network,
                self.attempt,
                now_ms(),
                data,
            )),
            false => p.dropped += 1,
        }
    }

    /// The decisions since the last call, as events to store.
    pub(crate) fn take(&self) -> Vec<NewEvent> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = std::mem::take(&mut p.events);
        if p.dropped > 0 {
            let data = json!({ "dropped": p.dropped });
            events.push(NewEvent::new(
                EventKind::Network,
                self.attempt,
                now_ms(),
                data,
            ));
            p.dropped = 0;
        }
        events
    }
}

/// What every connection shares.
struct Shared {
    allow: Vec<String>,
    recorder: Recorder,
    /// Changes (is dropped) when the proxy stops: open tunnels end.
    stopped: watch::Receiver<()>,
}

/// One attempt's proxy: serving while this value lives.
pub(crate) struct Proxy {
    port: u16,
    recorder: Recorder,
    task: tokio::task::JoinHandle<()>,
    _stop: watch::Sender<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Serves `listener` (bound in the run's namespace) for `allow`, from
    /// this process's tokio runtime.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        allow: &[String],
        attempt: u32,
    ) -> Result<Proxy, String> {
        let failed =
            |e: std::io::Error| format!("NETWORK allow: cannot start the egress proxy: {e}");
        let port = listener.local_addr().map_err(failed)?.port();
        listener.set_nonblocking(true).map_err(failed)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
        let _entered = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(failed)?;
        let recorder = Recorder {
            pending: Arc::default(),
            attempt,
        };
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            allow: allow.to_vec(),
            recorder: recorder.clone(),
            stopped,
        });
        let task = runtime.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                // A listener that cannot accept is broken: the run's
                // processes then find no way out at all (it fails closed).
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Proxy {
            port,
            recorder,
            task,
            _stop: stop,
        })
    }

    /// The variables that point the run's processes at the proxy.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let url = format!("http://127.0.0.1:{}", self.port);
        let direct = "localhost,127.0.0.1,::1".to_string();
        let mut env: Vec<(String, String)> = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ]
        .iter()
        .map(|k| (k.to_string(), url.clone()))
        .collect();
        env.push(("NO_PROXY".into(), direct.clone()));
        env.push(("no_proxy".into(), direct));
        env
    }

    /// Where its decisions wait to be written.
    pub(crate) fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let uri = req.uri();
    let is_connect = method == Method::CONNECT;
    let target = uri.authority().and_then(|a| {
        let port = match (a.port_u16(), is_connect, uri.scheme_str()) {
            (Some(p), _, _) => p,
            (None, false, Some("http")) => 80,
            _ => return None,
        };
        Some((a.host().to_string(), port))
    });
    let Some((host, port)) = target.filter(|_| is_connect || uri.scheme_str() == Some("http"))
    else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "dispatch egress proxy: send `CONNECT host:port`, or a request for an absolute http:// URL\n"
                .into(),
        ));
    };
    let allowed = dispatch_core::isolation::egress_allows(&shared.allow, &host);
    let mut event = json!({
        "host": host,
        "port": port,
        "method": method.as_str(),
        "allowed": allowed,
    });
    if !allowed {
        shared.recorder.record(event);
        return Ok(text(
            StatusCode::FORBIDDEN,
            format!(
                "dispatch egress proxy: {host} is not allowed by this run's NETWORK allow lines ({})\n",
                shared.allow.join(", ")
            ),
        ));
    }
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let upstream = match TcpStream::connect((name, port)).await {
        Ok(s) => s,
        Err(e) => {
            event["error"] = json!(e.to_string());
            shared.recorder.record(event);
            return Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("dispatch egress proxy: cannot reach {host}:{port}: {e}\n"),
            ));
        }
    };
    shared.recorder.record(event);
    match is_connect {
        true => {
            let mut stopped = shared.stopped.clone();
            tokio::spawn(async move {
                let tunnel = async {
                    let client = hyper::upgrade::on(req).await.ok()?;
                    let mut client = TokioIo::new(client);
                    let mut upstream = upstream;
                    tokio::io::copy_bidirectional(&mut client, &mut upstream)
                        .await
                        .ok()
                };
                tokio::select! {
                    _ = tunnel => {}
                    _ = stopped.changed() => {}
                }
            });
            Ok(Response::new(
                Full::new(Bytes::new()).map_err(|e| match e {}).boxed(),
            ))
        }
        false => Ok(forward(req, upstream).await.unwrap_or_else(|e| {
            text(
                StatusCode::BAD_GATEWAY,
                format!("dispatch egress proxy: {host}:{port} failed: {e}\n"),
            )
        })),
    }
}

/// Sends a plain request on to its host, its URI made origin-form and the
/// proxy's own headers dropped; the response streams back.
async fn forward(
    req: Request<Incoming>,
    upstream: TcpStream,
) -> Result<Response<Body>, hyper::Error> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    if parts.headers.get(hyper::header::HOST).is_none()
        && let Some(value) = parts
            .uri
            .authority()
            .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(hyper::header::HOST, value);
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    parts.headers.remove("proxy-connection");
    parts.headers.remove(hyper::header::PROXY_AUTHORIZATION);
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    Ok(resp.map(|b| b.boxed()))
}
