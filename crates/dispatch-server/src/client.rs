//! A small blocking client for the API (`http://` and `https://`), on the
//! workspace's one HTTP client (`dispatch-http`: reqwest with rustls): the
//! CLI's remote mode and the tests use it. A body may be read incrementally
//! (logs follow, events).
//!
//! Blocking, because its callers are: the CLI's remote commands are plain
//! functions reading `std::io::Read` bodies, called from inside the CLI's
//! current-thread runtime ([`dispatch_http::blocking`] runs the requests).
//!
//! TLS: the roots are the Mozilla set compiled in (webpki-roots, as every
//! client of the workspace), plus the PEM certificates of `--cacert` /
//! `DISPATCH_CACERT`.

use std::path::Path;

use dispatch_http::{ExtraCa, HttpError, reqwest};

pub use dispatch_http::blocking::Response;

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
        let http = dispatch_http::builder_with("", ExtraCa::File(ca.filter(|_| https)))
            .map_err(ca_error)?
            // The API never redirects; following one would carry the token.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(https)
            .build()
            .map_err(|e| ca_error(HttpError::Build(e)))?;
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
        let sent = dispatch_http::blocking::send_with(async move {
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
            request.send().await
        });
        match sent {
            Ok(response) => Ok(response),
            Err(Some(e)) => Err(classify(&addr, e)),
            Err(None) => Err(ClientError::Protocol { addr }),
        }
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

/// A CA file that cannot be used, in this client's words.
fn ca_error(e: HttpError) -> ClientError {
    match e {
        HttpError::CaFile { path, reason } => ClientError::CaFile {
            path: path.display().to_string(),
            reason,
        },
        other => ClientError::CaFile {
            path: String::new(),
            reason: other.to_string(),
        },
    }
}

/// The client's error, by what went wrong: an untrusted certificate and a
/// failed handshake get their own lines (rustls says why).
fn classify(addr: &str, e: reqwest::Error) -> ClientError {
    let addr = addr.to_string();
    if let Some(tls) = dispatch_http::rustls_error(&e) {
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
