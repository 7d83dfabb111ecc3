//! Raw HTTP/1.1 for the API's property tests: any method, target, content
//! type or body bytes, and the promises every answer must keep.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::common::TestServer;

/// A request body, shown as text when a case fails.
#[derive(Clone)]
pub struct Body(pub Vec<u8>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl From<&Value> for Body {
    fn from(v: &Value) -> Self {
        Body(serde_json::to_vec(v).expect("a Value serializes"))
    }
}

/// Sends one request over its own connection as raw HTTP/1.1 (so that any
/// content type, or none, can be sent); the status and body text. An I/O
/// error means the server dropped the connection.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(t) = content_type {
        head.push_str(&format!("content-type: {t}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    // The server may answer (413) before it read the body: the answer waits
    // in the socket even when the rest of the body cannot be written.
    let _ = conn.write_all(body);
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let not_http = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(not_http)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_http)?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(not_http)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = raw.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// The promises every answer keeps: it came, it is not a 5xx, and an error
/// is JSON with string `code` and `message`. Returns the status and the
/// body parsed as JSON (`Null` when it is not JSON).
pub fn check(
    answer: std::io::Result<(u16, String)>,
    what: &str,
) -> Result<(u16, Value), TestCaseError> {
    let what = shorten(what);
    let (status, text) = answer.map_err(|e| {
        TestCaseError::fail(format!("no answer to {what}: {e} (a handler panicked?)"))
    })?;
    prop_assert!(status < 500, "{} answered {}: {}", what, status, text);
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if (400..500).contains(&status) {
        let code = body["code"].as_str().unwrap_or_default();
        let message = body["message"].as_str().unwrap_or_default();
        prop_assert!(
            !code.is_empty() && !message.is_empty(),
            "{} answered {} without the {{code, message}} shape: {}",
            what,
            status,
            text
        );
    }
    Ok((status, body))
}

/// `s`, cut to a readable length, saying how long it was.
pub fn shorten(s: &str) -> String {
    match s.char_indices().nth(160) {
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()),
        None => s.to_string(),
    }
}

/// Every byte but the unreserved ones, percent-encoded.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: super::CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs the property against `strategy`, failing the test with the minimal input.
pub fn run_cases<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner().run(&strategy, test) {
        panic!("{e}");
    }
}

pub fn healthy(server: &TestServer) {
    let (status, body) = server.get("/healthz");
    assert_eq!(status, 200, "the server still answers /healthz: {body}");
}

/// A noop parcel, and a queued run of it with `extra` fields; its id.
pub fn queued_run(server: &TestServer, parcel: &str, extra: Value) -> String {
    let mut body = json!({ "parcel": parcel });
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    let (status, run) = server.post("/v1/runs", &body);
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().expect("an id").to_string()
}
