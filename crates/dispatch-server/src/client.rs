//! A small blocking client for the API (`http://` only), on `ureq`: the CLI's
//! remote mode and the tests use it. One connection per request; a body may
//! be read incrementally (logs follow, events).

use std::io::Read;
use std::time::Duration;

/// Why a request failed before an HTTP answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not an http://host:port address")]
    BadUrl(String),
    #[error(
        "cannot reach the dispatch server at {addr} (hint: is `dispatch server` running? check --host / DISPATCH_HOST)"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
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

/// `host:port` from `http://host:port[/]` (or a bare `host:port`).
pub fn authority(base: &str) -> Result<String, ClientError> {
    let rest = base.strip_prefix("http://").unwrap_or(base);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || base.starts_with("https://") {
        return Err(ClientError::BadUrl(base.to_string()));
    }
    Ok(rest.to_string())
}

/// Sends one request to the server at `base` and reads the status and
/// headers; the body is read as it arrives. HTTP is ureq's job: this only
/// maps its answers and errors onto the API client's.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ClientError> {
    let addr = authority(base)?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .max_idle_connections(0)
        .no_delay(true)
        .user_agent("dispatch")
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let bad = |_| ClientError::BadUrl(format!("{base}{path}"));
    let answer = match body {
        Some(body) => agent.run(
            builder
                .header("content-type", "application/json")
                .body(body.to_vec())
                .map_err(bad)?,
        ),
        None => agent.run(builder.body(()).map_err(bad)?),
    };
    let answer = answer.map_err(|e| match e {
        ureq::Error::Io(source) if is_connect(&source) => ClientError::Connect {
            addr: addr.clone(),
            source,
        },
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ClientError::Connect {
            addr: addr.clone(),
            source: std::io::Error::other(e.to_string()),
        },
        ureq::Error::Io(source) => ClientError::Io {
            addr: addr.clone(),
            source,
        },
        _ => ClientError::Protocol { addr: addr.clone() },
    })?;
    let (parts, body) = answer.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(Response {
        status: parts.status.as_u16(),
        headers,
        body: Box::new(body.into_reader()),
    })
}

fn is_connect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::TimedOut
    )
}
