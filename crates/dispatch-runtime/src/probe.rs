//! Dependency probes: each `REQUIRES NAME URL` is checked before a run is
//! created. `http://` and `https://` URLs get a GET that must answer 2xx
//! (through the workspace's HTTP client, `dispatch_http`); anything else a
//! TCP connect to the URL's host and port (or the scheme's well-known port).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use dispatch_core::parcel::Requirement;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a dependency is not usable: one line naming it.
#[derive(Debug, thiserror::Error)]
#[error(
    "dependency {name} ({url}) is {problem} (hint: start it, or fix `REQUIRES {name}` in the Agentfile)"
)]
pub struct ProbeError {
    pub name: String,
    pub url: String,
    pub problem: String,
}

/// Probes every requirement in order; the first failure is returned.
pub fn probe_all(requires: &[Requirement]) -> Result<(), ProbeError> {
    requires.iter().try_for_each(probe)
}

/// Probes one requirement.
pub fn probe(req: &Requirement) -> Result<(), ProbeError> {
    let fail = |problem: String| ProbeError {
        name: req.name.clone(),
        url: req.url.clone(),
        problem,
    };
    let url = url::Url::parse(&req.url).map_err(|e| fail(format!("not a valid URL ({e})")))?;
    match url.scheme() {
        "http" | "https" => probe_http(&url).map_err(fail),
        _ => probe_tcp(&url).map_err(fail),
    }
}

/// Well-known ports for schemes `url` does not know.
fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "redis" => 6379,
        "rediss" => 6380,
        "postgres" | "postgresql" => 5432,
        "mysql" => 3306,
        "amqp" => 5672,
        "mongodb" => 27017,
        "nats" => 4222,
        "memcached" => 11211,
        _ => return None,
    })
}

fn probe_tcp(url: &url::Url) -> Result<(), String> {
    let host = url
        .host_str()
        .ok_or_else(|| "missing a host in its URL".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port_or_known_default()
        .or_else(|| default_port(url.scheme()))
        .ok_or_else(|| format!("missing a port (no default port for `{}`)", url.scheme()))?;
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("unresolvable ({e})"))?
        .collect();
    let mut last = String::from("unresolvable (no addresses)");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("unreachable at {addr} ({e})"),
        }
    }
    Err(last)
}

fn probe_http(url: &url::Url) -> Result<(), String> {
    let client = dispatch_http::builder("probe")
        .and_then(|b| {
            b.timeout(PROBE_TIMEOUT)
                .build()
                .map_err(dispatch_http::HttpError::Build)
        })
        .map_err(|e| format!("not checkable: {e}"))?;
    match dispatch_http::blocking::send(client.get(url.as_str())) {
        Ok(resp) if (200..300).contains(&resp.status) => Ok(()),
        Ok(resp) => Err(format!("unhealthy (HTTP {})", resp.status)),
        Err(Some(e)) => Err(format!("unreachable ({})", causes(&e))),
        Err(None) => Err("unreachable (the request failed)".into()),
    }
}

/// `e` and its causes on one line (reqwest's own message names no cause).
fn causes(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str) -> Requirement {
        Requirement {
            name: "DEP".into(),
            url: url.into(),
        }
    }

    #[test]
    fn a_closed_port_is_unreachable_and_named() {
        // Bind then drop: nobody listens on the port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        let err = probe(&req(&format!("tcp://127.0.0.1:{port}"))).expect_err("closed");
        assert!(err.to_string().starts_with("dependency DEP ("), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    #[test]
    fn a_listening_port_is_fine_and_bad_urls_are_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        probe(&req(&format!("foo://127.0.0.1:{port}"))).expect("listening");
        let err = probe(&req("foo://127.0.0.1")).expect_err("no port");
        assert!(err.to_string().contains("missing a port"), "{err}");
    }
}
