//! Plain blocking HTTP for tests and benchmarks, on the workspace's one
//! client (`dispatch_http`): `http::get(url).set("k", "v").call()`.
//!
//! Shaped as the small blocking clients tests are written against: an
//! answer of 400 or more is an [`Error::Status`] that still carries the
//! response; a failure before an answer is an [`Error::Transport`].
//! Redirects are followed (up to 10) unless the [`Agent`] says `redirects(0)`.
//! Usable from a plain test or from inside a Tokio runtime.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use dispatch_http::reqwest;

/// An answer: status, headers and a body read as it arrives.
#[derive(Debug)]
pub struct Response(dispatch_http::blocking::Response);

impl Response {
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.header(name)
    }

    /// Every value of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.all(name)
    }

    /// The body, read to the end.
    pub fn into_string(self) -> std::io::Result<String> {
        self.0.text()
    }

    /// The body, read to the end, as bytes.
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        self.0.bytes()
    }

    /// The body as a reader (for streams).
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        self.0.into_reader()
    }
}

/// Why a request has no 2xx/3xx answer.
#[derive(Debug)]
pub enum Error {
    /// The server answered 400 or more: the answer.
    Status(u16, Response),
    /// No answer (connection refused, timeout, a broken stream).
    Transport(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Status(code, _) => write!(f, "the server answered {code}"),
            Error::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Settings shared by the requests made from it: redirects and a timeout.
#[derive(Clone, Debug)]
pub struct Agent {
    follow: bool,
    timeout: Option<Duration>,
}

/// Builds an [`Agent`].
#[derive(Debug)]
pub struct AgentBuilder(Agent);

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder::new()
    }
}

impl AgentBuilder {
    pub fn new() -> AgentBuilder {
        AgentBuilder(Agent {
            follow: true,
            timeout: None,
        })
    }

    /// `0`: no redirect is followed (any other number: they are).
    pub fn redirects(mut self, n: u32) -> AgentBuilder {
        self.0.follow = n > 0;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> AgentBuilder {
        self.0.timeout = Some(timeout);
        self
    }

    pub fn build(self) -> Agent {
        self.0
    }
}

impl Agent {
    pub fn request(&self, method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            agent: self.clone(),
        }
    }

    pub fn get(&self, url: &str) -> Request {
        self.request("GET", url)
    }

    pub fn post(&self, url: &str) -> Request {
        self.request("POST", url)
    }
}

/// A request being built.
#[derive(Debug)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    agent: Agent,
}

impl Request {
    /// Sets header `name`.
    pub fn set(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The whole request (the answer's body included) must take less.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.agent.timeout = Some(timeout);
        self
    }

    /// Sends it without a body.
    pub fn call(self) -> Result<Response, Error> {
        self.send(None)
    }

    /// Sends it with `body`.
    pub fn send_string(self, body: &str) -> Result<Response, Error> {
        self.send(Some(body.as_bytes().to_vec()))
    }

    /// Sends it with `body`.
    pub fn send_bytes(self, body: &[u8]) -> Result<Response, Error> {
        self.send(Some(body.to_vec()))
    }

    fn send(self, body: Option<Vec<u8>>) -> Result<Response, Error> {
        let method = reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|e| Error::Transport(format!("{}: {e}", self.method)))?;
        let mut request = client(self.agent.follow)?.request(method, &self.url);
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        if let Some(timeout) = self.agent.timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let url = self.url;
        match dispatch_http::blocking::send(request) {
            Ok(r) if r.status >= 400 => Err(Error::Status(r.status, Response(r))),
            Ok(r) => Ok(Response(r)),
            Err(Some(e)) => Err(Error::Transport(format!("{url}: {}", chain(&e)))),
            Err(None) => Err(Error::Transport(format!("{url}: the request failed"))),
        }
    }
}

/// The client: one that follows redirects, one that does not.
fn client(follow: bool) -> Result<&'static reqwest::Client, Error> {
    static FOLLOW: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static STAY: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let cell = if follow { &FOLLOW } else { &STAY };
    cell.get_or_init(|| {
        let policy = match follow {
            true => reqwest::redirect::Policy::limited(10),
            false => reqwest::redirect::Policy::none(),
        };
        dispatch_http::builder("test")
            .map_err(|e| e.to_string())?
            .redirect(policy)
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Transport(e.clone()))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A request with the default agent's settings.
pub fn request(method: &str, url: &str) -> Request {
    AgentBuilder::new().build().request(method, url)
}

pub fn get(url: &str) -> Request {
    request("GET", url)
}

pub fn post(url: &str) -> Request {
    request("POST", url)
}

pub fn put(url: &str) -> Request {
    request("PUT", url)
}

pub fn delete(url: &str) -> Request {
    request("DELETE", url)
}

pub fn head(url: &str) -> Request {
    request("HEAD", url)
}
