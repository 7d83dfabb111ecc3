//! What a web page in the user's browser may not do to a server on their
//! machine. A browser lets any page send a "simple" cross-origin request
//! (a form, or `fetch` in `no-cors` mode with `text/plain`) and, through
//! DNS rebinding, lets a page of `evil.example` talk to `127.0.0.1` under
//! its own name. So, before any handler or token check:
//!
//! - **Host** (every route): the `Host` must be an IP address, `localhost`
//!   or a `*.localhost` name, or a name the operator allowed
//!   (`--allowed-host NAME`, `.example.com` for a domain and its
//!   subdomains, `*` for any); else 421. A rebinding page's requests carry
//!   its own name, and an IP address cannot be rebound (Vite's
//!   `server.allowedHosts` and Jupyter's `local_hostnames` work the same way).
//! - **Origin** (every request that can change something, but webhooks):
//!   a browser's `Sec-Fetch-Site` must say `same-origin` (or `none`), and
//!   an `Origin` must be the server itself (the `Host`) or a name the
//!   operator allowed by name; else 403. Programs (the CLI, SDKs, curl)
//!   send neither header.
//! - **Content-Type** (`/v1`): a request with a body must say
//!   `application/json`; else 415. No browser sends that cross-origin
//!   without a CORS preflight, which this server never grants.
//!
//! Webhooks (`/hooks/…`) take whatever their senders send: only the Host
//! rule applies to them; they prove themselves with the service's secret.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, codes};

/// The `Host` names a server answers to besides IP addresses and
/// `localhost` (`--allowed-host`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `*`: any name (the operator relies on tokens and the network).
    any: bool,
    /// Lowercase names; a leading dot allows the domain and its subdomains.
    names: Vec<String>,
}

impl AllowedHosts {
    /// Parses `--allowed-host` values: names, `.domain` or `*`.
    pub fn new<S: AsRef<str>>(values: &[S]) -> Result<AllowedHosts, String> {
        let mut hosts = AllowedHosts::default();
        for value in values {
            let value = value.as_ref().trim();
            if value == "*" {
                hosts.any = true;
                continue;
            }
            let name = value.trim_end_matches('.').to_ascii_lowercase();
            let bare = name.strip_prefix('.').unwrap_or(&name);
            let valid = !bare.is_empty()
                && bare.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(format!(
                    "--allowed-host `{value}` is not a host name (hint: dispatch.example.com, .example.com for its subdomains too, or * for any)"
                ));
            }
            hosts.names.push(name);
        }
        Ok(hosts)
    }

    /// Whether any name passes.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// Whether the operator named any host.
    pub fn is_empty(&self) -> bool {
        !self.any && self.names.is_empty()
    }

    /// Whether a request for `host` (the `Host` header's name, without
    /// the port) is for this server.
    pub fn allows(&self, host: &str) -> bool {
        self.any || is_local(host) || self.named(host)
    }

    /// Whether the operator allowed `host` by name (not through `*`).
    fn named(&self, host: &str) -> bool {
        let host = normalize(host);
        self.names.iter().any(|n| match n.strip_prefix('.') {
            Some(domain) => host == domain || host.ends_with(n.as_str()),
            None => host == *n,
        })
    }
}

/// Lowercase, without a trailing dot.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// An IP address (no DNS, so nothing to rebind), `localhost` or a
/// `.localhost` name (RFC 6761: always loopback).
fn is_local(host: &str) -> bool {
    let host = normalize(host);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok() || host == "localhost" || host.ends_with(".localhost")
}

/// The name of an authority (`host[:port]`, `[v6][:port]`), without the port.
fn host_of(authority: &str) -> &str {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The request's authority: the `Host` header, else an absolute URI's.
fn authority(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .filter(|a| !a.trim().is_empty())
}

/// The guard in front of every route (see the module doc).
pub async fn check(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(authority) = authority(&request) else {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            codes::HOST_NOT_ALLOWED,
            "the request names no Host (hint: send `Host: 127.0.0.1:PORT`)".to_string(),
        );
    };
    let host = host_of(&authority);
    if !allowed.allows(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            codes::HOST_NOT_ALLOWED,
            format!(
                "this server does not answer to the name `{host}` (hint: use its IP address, or start it with --allowed-host {host})"
            ),
        );
    }
    let path = request.uri().path();
    let webhook = path.starts_with("/hooks/");
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes && !webhook && !same_origin(request.headers(), &authority, &allowed) {
        return refuse(
            StatusCode::FORBIDDEN,
            codes::CROSS_ORIGIN,
            "a page of another site may not change anything here (refused: cross-origin request)"
                .to_string(),
        );
    }
    if changes && path.starts_with("/v1/") {
        let request = match body_type(request.headers()) {
            BodyType::Json => request,
            // A parcel's files, streamed. Not a type a page of another site
            // can send without a preflight (which this server never grants).
            BodyType::Tar if path == "/v1/parcels" => request,
            BodyType::Tar | BodyType::Other => return not_json(),
            // Some clients send an empty body chunked, without a type.
            BodyType::Unsaid => {
                let (parts, body) = request.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, UNTYPED_MAX).await else {
                    return not_json();
                };
                if !bytes.is_empty() {
                    return not_json();
                }
                Request::from_parts(parts, axum::body::Body::empty())
            }
        };
        return next.run(request).await;
    }
    next.run(request).await
}

/// The most an untyped body may hold to be read and found empty.
const UNTYPED_MAX: usize = 64 * 1024;

fn not_json() -> Response {
    refuse(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        codes::UNSUPPORTED_MEDIA_TYPE,
        "the API takes JSON bodies only (hint: send `Content-Type: application/json`)".to_string(),
    )
}

/// Whether a browser says the request comes from this server's own pages
/// (a program sends neither `Sec-Fetch-Site` nor `Origin`).
fn same_origin(headers: &HeaderMap, authority: &str, allowed: &AllowedHosts) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text(header::ORIGIN.as_str()) else {
        return true;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        // `null`: a sandboxed frame, a file, a redirect across sites.
        return false;
    };
    let rest = rest.trim_end_matches('/');
    rest.eq_ignore_ascii_case(authority.trim()) || allowed.named(host_of(rest))
}

/// What a request says of its body's type.
#[derive(Debug, PartialEq, Eq)]
enum BodyType {
    /// `application/json` (with parameters), or no body at all.
    Json,
    /// `application/x-tar`: taken by `POST /v1/parcels` only.
    Tar,
    /// Another type, or a body of a length but no type.
    Other,
    /// No type, and a body of no stated length: empty, or not JSON.
    Unsaid,
}

fn body_type(headers: &HeaderMap) -> BodyType {
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        let is = |name: &str| {
            value.to_str().is_ok_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case(name))
            })
        };
        return if is("application/json") {
            BodyType::Json
        } else if is("application/x-tar") {
            BodyType::Tar
        } else {
            BodyType::Other
        };
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(0) => BodyType::Json,
        Some(_) => BodyType::Other,
        None if headers.contains_key(header::TRANSFER_ENCODING) => BodyType::Unsaid,
        None => BodyType::Json,
    }
}

fn refuse(status: StatusCode, code: &'static str, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses_pass_and_other_names_need_the_operator() {
        let none = AllowedHosts::new::<&str>(&[]).expect("empty");
        for ok in [
            "127.0.0.1",
            "localhost",
            "LocalHost.",
            "ui.localhost",
            "::1",
            "[::1]",
            "10.0.0.5",
        ] {
            assert!(none.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!none.allows(bad), "{bad}");
        }
        let some = AllowedHosts::new(&["dispatch.internal", ".example.com"]).expect("names");
        for ok in [
            "dispatch.internal",
            "DISPATCH.internal.",
            "example.com",
            "a.b.example.com",
        ] {
            assert!(some.allows(ok), "{ok}");
        }
        for bad in ["evil.internal", "notexample.com", "example.com.evil"] {
            assert!(!some.allows(bad), "{bad}");
        }
        assert!(
            AllowedHosts::new(&["*"])
                .expect("any")
                .allows("anything.at.all")
        );
        for bad in ["", "a b", "http://x", "x:80", "a..b"] {
            assert!(AllowedHosts::new(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_port_and_brackets_are_not_part_of_the_name() {
        assert_eq!(host_of("127.0.0.1:8077"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8077"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("evil.example"), "evil.example");
        assert_eq!(host_of("evil.example:80"), "evil.example");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("a header value"));
        }
        h
    }

    #[test]
    fn only_this_origin_may_change_anything() {
        let none = AllowedHosts::default();
        let here = "127.0.0.1:8077";
        assert!(same_origin(&headers(&[]), here, &none));
        assert!(same_origin(
            &headers(&[("origin", "http://127.0.0.1:8077")]),
            here,
            &none
        ));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            here,
            &none
        ));
        for bad in [
            &[("origin", "http://127.0.0.1:9999")][..],
            &[("origin", "null")],
            &[("origin", "http://evil.example")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "cross-site")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:8077"),
            ],
        ] {
            assert!(!same_origin(&headers(bad), here, &none), "{bad:?}");
        }
        // Behind a proxy that rewrites Host, the operator's names are origins too.
        let named = AllowedHosts::new(&["dispatch.example.com"]).expect("a name");
        assert!(same_origin(
            &headers(&[("origin", "https://dispatch.example.com")]),
            here,
            &named
        ));
        let any = AllowedHosts::new(&["*"]).expect("any");
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            here,
            &any
        ));
    }

    #[test]
    fn bodies_must_say_json() {
        let of = |h: &[(&'static str, &str)]| body_type(&headers(h));
        assert_eq!(of(&[]), BodyType::Json);
        assert_eq!(of(&[("content-length", "0")]), BodyType::Json);
        assert_eq!(of(&[("content-type", "application/json")]), BodyType::Json);
        assert_eq!(
            of(&[("content-type", "Application/JSON; charset=utf-8")]),
            BodyType::Json
        );
        assert_eq!(of(&[("transfer-encoding", "chunked")]), BodyType::Unsaid);
        // A parcel's files (not a type a page can send cross-site unasked).
        assert_eq!(of(&[("content-type", "application/x-tar")]), BodyType::Tar);
        for bad in [
            &[("content-type", "text/plain")][..],
            &[("content-type", "application/x-www-form-urlencoded")],
            &[("content-type", "multipart/form-data; boundary=x")],
            &[("content-type", "application/jsonp")],
            &[("content-length", "12")],
        ] {
            assert_eq!(of(bad), BodyType::Other, "{bad:?}");
        }
    }
}
