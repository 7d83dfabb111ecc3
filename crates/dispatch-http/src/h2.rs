//! Requests over an HTTP/2 connection held directly, for the calls a
//! process makes by the thousand and that wait long: model calls.
//!
//! reqwest reaches an HTTPS provider over HTTP/2 too, through
//! hyper-util's pooled client; but each call waiting on its answer then
//! holds that client's futures, laid out for connecting, checking out a
//! connection, redirecting and retrying (~7 KB a call, measured with
//! `heaptrack`), and hyper's task per request that awaits the stream's
//! response and hands it over, when all it waits for is one stream's
//! response. Here a call on an established connection sends on the `h2`
//! crate's own `SendRequest` and awaits the stream's response itself: it
//! holds a reference to the stream and nothing else.
//!
//! What this takes on, and what it leaves to reqwest:
//! - connections per origin (`https` host and port), the first opened at
//!   the first call with [`crate::tls_config`]'s TLS (the same roots,
//!   `DISPATCH_CACERT`, ALPN) and [`crate::CONNECT_TIMEOUT`], shared by the
//!   calls after it; another is opened when every open one carries as many
//!   calls as its server allows streams (`SETTINGS_MAX_CONCURRENT_STREAMS`,
//!   commonly 100–256: hyper's pooled client would queue the calls beyond
//!   it on the one connection, hyperium/hyper#3623), and one that closes (a
//!   `GOAWAY`, a broken socket) is dropped and opened again when needed;
//! - an origin whose server does not choose `h2` by ALPN, or that cannot be
//!   reached, is reqwest's ([`Direct::post`] says `None`): for ever for the
//!   first, for [`RETRY_DIRECT`] for the second, so reqwest reports what is
//!   wrong in its own words;
//! - nothing when a proxy is configured (`HTTPS_PROXY`, `ALL_PROXY`, in
//!   either case): reqwest honours those, and every call is its;
//! - no redirects (a model API answers its POST), no retries of a request
//!   that was sent.
//!
//! [`OFF_ENV`] (`DISPATCH_HTTP2_DIRECT=off`) turns it off: every call is
//! reqwest's, as before.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use hyper::{Request, Response, Uri, header};
use rustls::pki_types::ServerName;

use crate::{CONNECT_TIMEOUT, ExtraCa, HttpError, tls_config, user_agent};

/// What a call that went out can fail with (a reset stream, a broken
/// connection).
pub type Error = h2::Error;

/// `off` turns direct HTTP/2 off: every model call goes through reqwest.
pub const OFF_ENV: &str = "DISPATCH_HTTP2_DIRECT";

/// How long an origin that could not be reached is left to reqwest before
/// a direct connection is tried again.
pub const RETRY_DIRECT: Duration = Duration::from_secs(30);

/// A stream's receive window, and the connection's (hyper's client's).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The most connections opened to one origin.
const MAX_CONNECTIONS: usize = 64;

/// The proxy variables reqwest reads for an `https` URL.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// What is known of one origin.
enum Conn {
    /// Its HTTP/2 connections (none open just now, or more than one when
    /// the calls outnumber one connection's streams).
    H2(Vec<Open>),
    /// The server chose HTTP/1.1: reqwest's.
    NotH2,
    /// Could not be reached at this time: reqwest's until [`RETRY_DIRECT`]
    /// after it.
    Failed(Instant),
}

/// An open HTTP/2 connection: its sender, cloned per call, and how many
/// calls' streams it carries.
struct Open {
    sender: SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    /// Its task ended: the connection is closed.
    closed: Arc<AtomicBool>,
}

impl Open {
    /// Its sender for one call, that call's stream counted.
    fn lend(&self) -> (SendRequest<Bytes>, Arc<AtomicBool>, Stream) {
        (
            self.sender.clone(),
            self.closed.clone(),
            Stream::open(&self.streams),
        )
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether the connection takes another stream now (its server's
    /// limit, `SETTINGS_MAX_CONCURRENT_STREAMS`, as last seen).
    fn has_room(&self) -> bool {
        !self.is_closed()
            && self.streams.load(Ordering::SeqCst) < self.sender.current_max_send_streams()
    }
}

/// The least busy open connection of an origin, if it has one.
fn least_busy(conn: &Option<Conn>) -> Option<&Open> {
    let Some(Conn::H2(open)) = conn else {
        return None;
    };
    open.iter().min_by_key(|o| o.streams.load(Ordering::SeqCst))
}

/// An origin's slot: held while a connection is opened, so the calls that
/// start together open one connection, not one each.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// One stream of a connection, counted until the response's body is done
/// with (read to its end or dropped), or the call failed.
struct Stream(Arc<AtomicUsize>);

impl Stream {
    fn open(streams: &Arc<AtomicUsize>) -> Stream {
        streams.fetch_add(1, Ordering::SeqCst);
        Stream(streams.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response's body, holding its stream's place on the connection; what
/// is read of it is given back to the stream's and the connection's
/// receive windows at once.
pub struct Body {
    inner: h2::RecvStream,
    _stream: Stream,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, h2::Error>>> {
        match self.inner.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = self.inner.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => match self.inner.poll_trailers(cx) {
                Poll::Ready(Ok(Some(trailers))) => {
                    Poll::Ready(Some(Ok(hyper::body::Frame::trailers(trailers))))
                }
                Poll::Ready(Ok(None)) => Poll::Ready(None),
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// The direct HTTP/2 connections of a process (see the module).
pub struct Direct {
    tls: tokio_rustls::TlsConnector,
    user_agent: header::HeaderValue,
    origins: Mutex<HashMap<(String, u16), Slot>>,
}

/// The process's [`Direct`] for `purpose`'s user agent, or `None` when it
/// is off (see the module); built at the first call.
pub fn direct(purpose: &'static str) -> Option<&'static Direct> {
    static DIRECT: OnceLock<Option<Direct>> = OnceLock::new();
    DIRECT.get_or_init(|| Direct::from_env(purpose)).as_ref()
}

/// Whether this environment turns direct HTTP/2 off.
fn off(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    var(OFF_ENV).is_some_and(|v| v.trim().eq_ignore_ascii_case("off"))
        || PROXY_VARS.iter().any(|v| set(v))
}

impl Direct {
    /// `None` when [`OFF_ENV`] says `off`, a proxy is configured, or the
    /// TLS configuration cannot be built (reqwest's client reports that).
    fn from_env(purpose: &str) -> Option<Direct> {
        if off(|name| std::env::var(name).ok()) {
            return None;
        }
        Direct::new(purpose, ExtraCa::FromEnv).ok()
    }

    /// Connections with [`crate::builder_with`]'s TLS and `purpose`'s user
    /// agent, whatever the environment says of proxies.
    pub fn new(purpose: &str, ca: ExtraCa<'_>) -> Result<Direct, HttpError> {
        let tls = tls_config(ca)?;
        Ok(Direct {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            user_agent: header::HeaderValue::from_str(&user_agent(purpose))
                .unwrap_or_else(|_| header::HeaderValue::from_static("dispatch")),
            origins: Mutex::default(),
        })
    }

    /// POSTs `body` to `url` with `headers` (and a user agent) over the origin's HTTP/2
    /// connection: `Err(body)` when the call is reqwest's (not `https`, not
    /// HTTP/2, not reachable directly just now; nothing was sent), else
    /// the response, or the error of a request that may have been sent.
    /// The body is not held while the answer is awaited: the connection
    /// has it until it went out.
    pub async fn post<'h>(
        &self,
        url: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        body: Bytes,
    ) -> Result<Result<Response<Body>, Error>, Bytes> {
        let Ok(uri) = url.parse::<Uri>() else {
            return Err(body);
        };
        if uri.scheme_str() != Some("https") {
            return Err(body);
        }
        let Some(host) = uri.host() else {
            return Err(body);
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let mut fields = header::HeaderMap::new();
        fields.insert(header::USER_AGENT, self.user_agent.clone());
        fields.insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(body.len()),
        );
        for (name, value) in headers {
            let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                header::HeaderValue::from_str(value),
            ) else {
                return Err(body);
            };
            fields.append(name, value);
        }
        let slot = self.slot(host, port);
        // Once more on a new connection when the one held had closed
        // before the request went out on it.
        for _ in 0..2 {
            let Some((sender, closed, stream)) = self.sender(&slot, host, port).await else {
                return Err(body);
            };
            let Ok(mut request) = Request::post(uri.clone()).body(()) else {
                return Err(body);
            };
            *request.headers_mut() = fields.clone();
            // Waits for a stream when the connection carries as many as
            // its server allows (the count above saw it had room; another
            // process's calls do not share it, but a limit lowered since may).
            let sent = match sender.ready().await {
                Ok(mut ready) => ready.send_request(request, body.is_empty()),
                Err(e) => Err(e),
            };
            let (response, mut send) = match sent {
                Ok(sent) => sent,
                // Nothing went out: the connection is done with.
                Err(_) => {
                    closed.store(true, Ordering::SeqCst);
                    continue;
                }
            };
            if !body.is_empty() {
                // Queued whole, moved: the connection sends it as the
                // server's windows allow, and lets it go once it went out.
                if let Err(e) = send.send_data(body, true) {
                    return Ok(Err(e));
                }
            }
            return Ok(response.await.map(|r| {
                r.map(|inner| Body {
                    inner,
                    _stream: stream,
                })
            }));
        }
        Err(body)
    }

    fn slot(&self, host: &str, port: u16) -> Slot {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        origins.entry((host.to_string(), port)).or_default().clone()
    }

    /// A sender with room for one more stream, and that stream counted:
    /// on an open connection of the origin, else on one opened for it.
    async fn sender(
        &self,
        slot: &Slot,
        host: &str,
        port: u16,
    ) -> Option<(SendRequest<Bytes>, Arc<AtomicBool>, Stream)> {
        let mut conn = slot.lock().await;
        match &mut *conn {
            Some(Conn::H2(open)) => {
                open.retain(|o| !o.is_closed());
                if let Some(o) = open.iter().find(|o| o.has_room()) {
                    return Some(o.lend());
                }
                // A server that allows few streams (or none) gets no more
                // connections than this; the calls beyond wait for a stream.
                if open.len() >= MAX_CONNECTIONS {
                    return least_busy(&conn).map(Open::lend);
                }
            }
            Some(Conn::NotH2) => return None,
            Some(Conn::Failed(at)) if at.elapsed() < RETRY_DIRECT => return None,
            _ => {}
        }
        // Boxed: the TLS handshake's state is large, and a call that waits
        // on its answer should not hold room for it.
        let opened = Box::pin(tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.connect(host, port),
        ))
        .await;
        match opened {
            Ok(Ok(Some((sender, closed)))) => {
                let o = Open {
                    sender,
                    streams: Arc::default(),
                    closed,
                };
                let lent = o.lend();
                match &mut *conn {
                    Some(Conn::H2(open)) => open.push(o),
                    _ => *conn = Some(Conn::H2(vec![o])),
                }
                Some(lent)
            }
            // Its open connections are full: the call waits for a stream on
            // the least busy one, as on a connection of reqwest's.
            _ if least_busy(&conn).is_some() => least_busy(&conn).map(Open::lend),
            Ok(Ok(None)) => {
                *conn = Some(Conn::NotH2);
                None
            }
            Ok(Err(_)) | Err(_) => {
                *conn = Some(Conn::Failed(Instant::now()));
                None
            }
        }
    }

    /// A new connection: its sender and whether it closed since, if the
    /// server chose HTTP/2; `None` if it chose HTTP/1.1.
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<
        Option<(SendRequest<Bytes>, Arc<AtomicBool>)>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let name = ServerName::try_from(host.to_string())?;
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(name, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(None);
        }
        // Receive windows as hyper's client sets them: a reader slow on one
        // stream does not stop the others' answers.
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tls)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let done = closed.clone();
        // Driven on the runtime of the call that opened it; when that
        // runtime ends, the connection is closed and the next call opens
        // another.
        tokio::spawn(async move {
            let _ = connection.await;
            done.store(true, Ordering::SeqCst);
        });
        Ok(Some((sender, closed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_or_the_switch_turns_it_off() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!off(env(&[])));
        assert!(
            !off(env(&[("HTTP_PROXY", "http://p:3128")])),
            "not for https"
        );
        assert!(!off(env(&[("HTTPS_PROXY", " ")])), "empty is unset");
        assert!(off(env(&[("HTTPS_PROXY", "http://p:3128")])));
        assert!(off(env(&[("all_proxy", "socks5://p")])));
        assert!(off(env(&[(OFF_ENV, "OFF")])));
        assert!(!off(env(&[(OFF_ENV, "on")])));
    }
}
