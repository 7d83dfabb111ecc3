//! Requests over an HTTP/2 connection held directly, for the calls a
//! process makes by the thousand and that wait long: model calls.
//!
//! reqwest reaches an HTTPS provider over HTTP/2 too, through
//! hyper-util's pooled client; but each call waiting on its answer then
//! holds that client's futures, laid out for connecting, checking out a
//! connection, redirecting and retrying (~7 KB a call, measured with
//! `heaptrack`), when all it waits for is one stream's response. Here a call
//! on an established connection holds hyper's `SendRequest` future (a
//! channel's receiving end) and nothing else.
//!
//! What this takes on, and what it leaves to reqwest:
//! - one connection per origin (`https` host and port), opened at the first
//!   call with [`crate::tls_config`]'s TLS (the same roots, `DISPATCH_CACERT`,
//!   ALPN) and [`crate::CONNECT_TIMEOUT`], shared by every call after it, and
//!   opened again when it closes (a `GOAWAY`, a broken socket);
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
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response, Uri, body::Incoming, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

use crate::{CONNECT_TIMEOUT, ExtraCa, HttpError, tls_config, user_agent};

/// `off` turns direct HTTP/2 off: every model call goes through reqwest.
pub const OFF_ENV: &str = "DISPATCH_HTTP2_DIRECT";

/// How long an origin that could not be reached is left to reqwest before
/// a direct connection is tried again.
pub const RETRY_DIRECT: Duration = Duration::from_secs(30);

/// The proxy variables reqwest reads for an `https` URL.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// What is known of one origin.
enum Conn {
    /// An HTTP/2 connection; its sender is cloned per call.
    H2(SendRequest<Full<Bytes>>),
    /// The server chose HTTP/1.1: reqwest's.
    NotH2,
    /// Could not be reached at this time: reqwest's until [`RETRY_DIRECT`]
    /// after it.
    Failed(Instant),
}

/// An origin's slot: held while its connection is opened, so the calls
/// that start together open one connection, not one each.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

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
    /// connection: `None` when the call is reqwest's (not `https`, not
    /// HTTP/2, not reachable directly just now; nothing was sent), else
    /// the response, or the error of a request that may have been sent.
    pub async fn post<'h>(
        &self,
        url: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        body: Bytes,
    ) -> Option<Result<Response<Incoming>, hyper::Error>> {
        let uri: Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("https") {
            return None;
        }
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let mut request = Request::post(uri.clone())
            .header(header::USER_AGENT, self.user_agent.clone())
            .body(Full::new(body))
            .ok()?;
        for (name, value) in headers {
            let name = header::HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = header::HeaderValue::from_str(value).ok()?;
            request.headers_mut().append(name, value);
        }
        let slot = self.slot(host, port);
        // Once more on a new connection when the one held had closed
        // before the request went out on it.
        for _ in 0..2 {
            let mut sender = self.sender(&slot, host, port).await?;
            match sender.try_send_request(request).await {
                Ok(response) => return Some(Ok(response)),
                // Not sent: the next turn finds the connection closed.
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Some(Err(e.into_error())),
                },
            }
        }
        None
    }

    fn slot(&self, host: &str, port: u16) -> Slot {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        origins.entry((host.to_string(), port)).or_default().clone()
    }

    /// The origin's sender, connecting when it has none (or a closed one).
    async fn sender(&self, slot: &Slot, host: &str, port: u16) -> Option<SendRequest<Full<Bytes>>> {
        let mut conn = slot.lock().await;
        match &*conn {
            Some(Conn::H2(sender)) if !sender.is_closed() => return Some(sender.clone()),
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
        let (next, sender) = match opened {
            Ok(Ok(Some(sender))) => (Conn::H2(sender.clone()), Some(sender)),
            Ok(Ok(None)) => (Conn::NotH2, None),
            Ok(Err(_)) | Err(_) => (Conn::Failed(Instant::now()), None),
        };
        *conn = Some(next);
        sender
    }

    /// A new connection: its sender if the server chose HTTP/2, `None` if
    /// it chose HTTP/1.1.
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<SendRequest<Full<Bytes>>>, Box<dyn std::error::Error + Send + Sync>> {
        let name = ServerName::try_from(host.to_string())?;
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(name, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(None);
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await?;
        // Driven on the runtime of the call that opened it; when that
        // runtime ends, the sender is closed and the next call opens another.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Some(sender))
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
