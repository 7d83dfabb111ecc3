//! A small blocking client for the API (`http://` and `https://`), on
//! `reqwest` with rustls: the CLI's remote mode and the tests use it. A body
//! may be read incrementally (logs follow, events).
//!
//! Blocking, because its callers are: the CLI's remote commands are plain
//! functions reading `std::io::Read` bodies, called from inside the CLI's
//! current-thread runtime. `reqwest::blocking` refuses to run there, so the
//! requests run on one small runtime thread of this module's own
//! ([`runtime`]) and the caller waits for them by parking its thread.
//!
//! TLS: the roots are the Mozilla set compiled in (webpki-roots, as the
//! model providers' client), plus the PEM certificates of `--cacert` /
//! `DISPATCH_CACERT`. An `http://` base loads no roots at all.

use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Why a request failed before an HTTP answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not an http://host:port or https://host:port address")]
    BadUrl(String),
    #[error(
        "cannot reach the dispatch server at {addr} (hint: is `dispatch server` running? check --host / DISPATCH_HOST)"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server's certificate is not trusted (one line: no source).
    #[error(
        "the dispatch server at {addr} presented a certificate this client does not trust ({reason}) (hint: pass the CA that signed it with --cacert FILE or DISPATCH_CACERT)"
    )]
    Certificate { addr: String, reason: String },
    #[error(
        "the TLS handshake with the dispatch server at {addr} failed ({reason}) (hint: does it serve https? start it with --tls-cert/--tls-key, or use http://)"
    )]
    Tls { addr: String, reason: String },
    #[error("cannot use the CA certificates in {path}: {reason} (hint: --cacert takes a PEM file)")]
    CaFile { path: String, reason: String },
    #[error("the dispatch server at {addr} answered with something that is not HTTP")]
    Protocol { addr: String },
    #[error("talking to the dispatch server at {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// An answer: status, headers, and the body still to read.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body, read to the end.
    pub fn text(mut self) -> std::io::Result<String> {
        let mut out = String::new();
        self.body.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The body as a reader (for streams).
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `(https, host:port)` of `http://host:port[/]`, `https://host:port[/]` or
/// a bare `host:port` (http).
pub fn authority(base: &str) -> Result<(bool, String), ClientError> {
    let (https, rest) = match base.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some(_) => return Err(ClientError::BadUrl(base.to_string())),
        None => (false, base),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(ClientError::BadUrl(base.to_string()));
    }
    Ok((https, rest.to_string()))
}

/// A client of one server: its connections are kept between requests.
#[derive(Clone, Debug)]
pub struct Client {
    /// `http(s)://host:port`.
    base: String,
    addr: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base`; `ca` is a PEM file of certificates
    /// trusted beside the built-in roots (only read for an `https://` base).
    pub fn new(base: &str, ca: Option<&Path>) -> Result<Client, ClientError> {
        let (https, addr) = authority(base)?;
        let scheme = if https { "https" } else { "http" };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .user_agent("dispatch")
            // The API never redirects; following one would carry the token.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(https)
            // Roots cost a little to load: only for https.
            .tls_built_in_root_certs(https);
        if https && let Some(path) = ca {
            for cert in read_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::CaFile {
            path: ca.map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            base: format!("{scheme}://{addr}"),
            addr,
            http,
        })
    }

    /// `http(s)://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and reads the status and headers; the body is read
    /// as it arrives.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let body = body.map(|b| Upload::Json(b.to_vec()));
        self.send(method, path, headers, body)
    }

    /// Sends the file at `file` as the body, streamed from disk (any size),
    /// as `content_type`.
    pub fn request_file(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &'static str,
        file: &Path,
    ) -> Result<Response, ClientError> {
        let body = Upload::File(content_type, file.to_path_buf());
        self.send(method, path, headers, Some(body))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Upload>,
    ) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::BadUrl(url.clone()))?;
        let mut request = self.http.request(method, &url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let addr = self.addr.clone();
        let sent = runtime().spawn(async move {
            request = match body {
                None => request,
                Some(Upload::Json(bytes)) => request
                    .header("content-type", "application/json")
                    .body(bytes),
                Some(Upload::File(content_type, path)) => {
                    // A file that cannot be opened is refused by the server
                    // as an empty body: say so here instead.
                    let file = tokio::fs::File::open(&path).await;
                    let length = file
                        .as_ref()
                        .ok()
                        .map(|_| std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
                    match (file, length) {
                        (Ok(file), Some(length)) => request
                            .header("content-type", content_type)
                            .header("content-length", length)
                            .body(reqwest::Body::from(file)),
                        _ => request.header("content-type", content_type),
                    }
                }
            };
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), v)
                })
                .collect();
            Ok::<_, reqwest::Error>((status, headers, pump(response)))
        });
        let (status, headers, body) = match wait(sent) {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(classify(&addr, e)),
            Err(_) => return Err(ClientError::Protocol { addr }),
        };
        Ok(Response {
            status,
            headers,
            body: Box::new(Body {
                rx: body,
                chunk: Bytes::new(),
            }),
        })
    }
}

/// A request's body.
enum Upload {
    Json(Vec<u8>),
    /// Its content type and where it is.
    File(&'static str, std::path::PathBuf),
}

/// Sends one request to the server at `base` (no extra CA) and reads the
/// status and headers; the body is read as it arrives.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ClientError> {
    Client::new(base, None)?.request(method, path, headers, body)
}

/// The certificates of a PEM file.
fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let bad = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("it holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The client's error, by what went wrong: an untrusted certificate and a
/// failed handshake get their own lines (rustls says why).
fn classify(addr: &str, e: reqwest::Error) -> ClientError {
    let addr = addr.to_string();
    if let Some(tls) = rustls_error(&e) {
        return match tls {
            rustls::Error::InvalidCertificate(reason) => ClientError::Certificate {
                addr,
                reason: describe_certificate(reason),
            },
            other => ClientError::Tls {
                addr,
                reason: other.to_string(),
            },
        };
    }
    if e.is_connect() || e.is_timeout() {
        return ClientError::Connect {
            addr,
            source: std::io::Error::other(e),
        };
    }
    if e.is_builder() {
        return ClientError::BadUrl(addr);
    }
    if e.is_request() || e.is_body() {
        return ClientError::Io {
            addr,
            source: std::io::Error::other(e),
        };
    }
    ClientError::Protocol { addr }
}

/// The rustls error somewhere in `e`'s sources. hyper wraps it in an I/O
/// error inside an I/O error, and an I/O error's `source` skips the error
/// it holds: those are looked into.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner: Option<&(dyn std::error::Error + 'static)> =
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                io.get_ref().map(|i| i as _)
            } else {
                None
            };
        if let Some(tls) = inner.and_then(rustls_error) {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

fn describe_certificate(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "it is signed by an unknown CA".into(),
        C::BadSignature => "its signature is bad".into(),
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is not valid for this host name".into()
        }
        other => format!("{other:?}"),
    }
}

/// Streams `response`'s body into a channel the blocking reader drains;
/// stops when the reader is dropped.
fn pump(mut response: reqwest::Response) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(8);
    runtime().spawn(async move {
        loop {
            let next = match response.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// A body being read: chunks from [`pump`].
struct Body {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match wait(self.rx.recv()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The runtime requests run on: a current-thread runtime driven by one
/// thread of its own, started on the first request.
fn runtime() -> &'static Handle {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime starts (the process is out of threads or files otherwise)");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("dispatch-http".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread starts (the process is out of threads otherwise)");
        handle
    })
}

/// Waits for `fut` by parking this thread, whatever runtime it is in: the
/// work itself runs on [`runtime`]. `unconstrained`: inside a caller's
/// runtime, tokio's cooperative budget would otherwise turn a long body
/// into a busy loop (the budget is only refilled when a task yields).
fn wait<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let fut = std::pin::pin!(tokio::task::unconstrained(fut));
    let mut fut = fut;
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_http_or_https_host_port() {
        assert_eq!(
            authority("http://h:1/").expect("ok"),
            (false, "h:1".to_string())
        );
        assert_eq!(
            authority("https://h:1").expect("ok"),
            (true, "h:1".to_string())
        );
        assert_eq!(authority("h:1").expect("ok"), (false, "h:1".to_string()));
        for bad in ["ftp://h:1", "http://", "https://h:1/api", "http://u@h:1"] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
