//! The checks an HTTP ingress applies to each request, shared by a local
//! service's listener (hyper, `ingress`) and the cluster servers'
//! `/hooks/<service>/<path>` route (axum): both speak the same `http` types.
//!
//! In order: header section larger than the limit → 431; wrong path → 404;
//! method not allowed → 405 with `Allow`; missing or wrong shared secret
//! (`x-dispatch-secret`, or `Authorization: Bearer`, compared as SHA-256
//! digests in constant time) → 401; a declared body larger than the limit →
//! 413 (a body that turns out larger while read: [`body_too_large`]).
//! Then, once the body is read, its signature (`super::signature`).
//! Auth-bearing headers are redacted in the [`envelope`].

use hyper::header::{ALLOW, CONTENT_LENGTH, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::model::IngressPolicy;

/// Headers whose values never leave the listener.
pub const REDACTED: [&str; 9] = [
    "authorization",
    "x-dispatch-secret",
    "cookie",
    "proxy-authorization",
    "set-cookie",
    "x-hub-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "x-dispatch-signature",
];

/// Why a request is refused: the answer's status, `{code, message}` and
/// extra headers.
#[derive(Debug)]
pub struct Rejection {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// The SHA-256 the policy's shared secret must hash to, decoded.
pub fn secret_digest(policy: &IngressPolicy) -> Option<Vec<u8>> {
    policy
        .secret_sha256
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
}

/// Checks a request's head (`path` as the policy sees it) against `policy`.
pub fn check_head(
    policy: &IngressPolicy,
    secret: Option<&[u8]>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    let header_bytes: u64 = headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum();
    if header_bytes > policy.max_header_bytes {
        return Err(Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the headers exceed {} bytes", policy.max_header_bytes),
        ));
    }
    if policy.path.as_deref().is_some_and(|p| p != path) {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path",
        ));
    }
    let method = method.as_str();
    if !policy.methods.is_empty() && !policy.methods.iter().any(|m| m == method) {
        let allowed = policy.methods.join(", ");
        let mut r = Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allowed}"),
        );
        if let Ok(v) = HeaderValue::from_str(&allowed) {
            r.headers.push((ALLOW, v));
        }
        return Err(r);
    }
    if let Some(expected) = secret
        && !authorized(headers, expected)
    {
        let mut r = Rejection::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong shared secret (x-dispatch-secret or Authorization: Bearer)",
        );
        r.headers
            .push((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        return Err(r);
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > policy.max_body_bytes) {
        return Err(body_too_large(policy));
    }
    Ok(())
}

/// The 413 for a body over the policy's limit.
pub fn body_too_large(policy: &IngressPolicy) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body exceeds {} bytes", policy.max_body_bytes),
    )
}

/// The 400 for a body that could not be read.
pub fn bad_body() -> Rejection {
    Rejection::new(
        StatusCode::BAD_REQUEST,
        "bad_body",
        "the body could not be read",
    )
}

/// Whether the headers present the shared secret whose SHA-256 is `expected`.
fn authorized(h: &HeaderMap, expected: &[u8]) -> bool {
    let presented = h
        .get("x-dispatch-secret")
        .map(HeaderValue::as_bytes)
        .or_else(|| {
            h.get(hyper::header::AUTHORIZATION)
                .map(HeaderValue::as_bytes)
                .and_then(|v| {
                    let (scheme, rest) = v.split_at(v.len().min(7));
                    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
                })
        });
    let Some(presented) = presented else {
        return false;
    };
    let digest = Sha256::digest(presented);
    digest.as_slice().ct_eq(expected).into()
}

/// The request as the agent sees it: listener, remote address, method,
/// path, query, lowercased headers (auth-bearing ones redacted) and body.
pub fn envelope(
    listener: &str,
    remote: &str,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let name = name.as_str().to_ascii_lowercase();
        let value = if REDACTED.contains(&name.as_str()) {
            "[redacted]".to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match map.get_mut(&name) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                map.insert(name, Value::String(value));
            }
        }
    }
    json!({
        "listener": listener,
        "remote_addr": remote,
        "method": method.as_str(),
        "path": path,
        "query": query,
        "headers": map,
        "body": String::from_utf8_lossy(body),
    })
}
