//! What a web page cannot make the server do, over real HTTP on loopback
//! (the requests a browser sends, written out byte for byte): a request
//! for a foreign `Host` (DNS rebinding) is refused on every route, a
//! write from another origin or with a body that is not JSON changes
//! nothing, prune needs a body, and webhooks still take any content type.
//! The browser itself is in `dispatch-cli/tests/it/dashboard_attack.rs`.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, block_on};
use dispatch_server::SharedStore;
use dispatch_server::guard::AllowedHosts;
use dispatch_server::limits::HttpLimits;
use dispatch_store::SqliteStore;
use serde_json::{Value, json};

/// One raw HTTP/1.1 request with exactly these headers; the status, the
/// head (lowercase) and the body.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| *k == "transfer-encoding") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).expect("send the head");
    conn.write_all(body.as_bytes()).expect("send the body");
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| v["code"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn runs(server: &TestServer) -> usize {
    let (_, body) = server.get("/v1/runs");
    body["runs"].as_array().map_or(0, Vec::len)
}

const AGENTFILE: &str = "FROM noop\nNAME bench\n";

#[test]
fn a_request_for_another_name_is_refused_on_every_route() {
    let server = TestServer::start_configured(|s| {
        s.with_allowed_hosts(AllowedHosts::new(&["dispatch.internal"]).expect("a name"))
    });
    let addr = server.addr;
    let port = addr.port();
    let parcel = json!({"files": {"Agentfile": AGENTFILE}}).to_string();
    for path in [
        "/v1/runs",
        "/ui/runs",
        "/healthz",
        "/v1/openapi.json",
        "/ui/login",
    ] {
        let (status, _, body) = send(
            addr,
            "GET",
            path,
            &[("host", &format!("evil.example:{port}"))],
            "",
        );
        assert_eq!(
            (status, code(&body).as_str()),
            (421, "host_not_allowed"),
            "{path}: {body}"
        );
        assert!(
            !body.contains("\"runs\""),
            "{path}: no answer leaks: {body}"
        );
    }
    for path in ["/v1/parcels", "/hooks/nobody", "/ui/runs/0123/stop"] {
        let (status, _, body) = send(
            addr,
            "POST",
            path,
            &[
                ("host", "evil.example"),
                ("content-type", "application/json"),
            ],
            &parcel,
        );
        assert_eq!(status, 421, "{path}: {body}");
    }
    // A rebinding name that starts like a loopback one is still a name.
    let (status, _, _) = send(addr, "GET", "/v1/runs", &[("host", "127.0.0.1.nip.io")], "");
    assert_eq!(status, 421);
    let (status, _, _) = send(addr, "GET", "/v1/runs", &[], "");
    assert_eq!(status, 421, "no Host at all");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "dashboard.localhost".to_string(),
        format!("DISPATCH.internal:{port}"),
    ] {
        let (status, _, body) = send(addr, "GET", "/v1/runs", &[("host", &host)], "");
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, body) = server.post("/v1/parcels", &json!({"files": {"Agentfile": AGENTFILE}}));
    assert_eq!(status, 201, "the CLI's client passes: {body}");
}

#[test]
fn a_page_of_another_origin_changes_nothing() {
    let server = TestServer::start_configured(|s| s);
    let addr = server.addr;
    let host = addr.to_string();
    let parcel = json!({"files": {"Agentfile": AGENTFILE}}).to_string();
    // A "simple request": text/plain, or a form, from any page.
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, _, body) = send(
            addr,
            "POST",
            "/v1/parcels",
            &[("host", &host), ("content-type", content_type)],
            &parcel,
        );
        assert_eq!(
            (status, code(&body).as_str()),
            (415, "unsupported_media_type"),
            "{content_type}: {body}"
        );
    }
    // A body without any type (a Blob with no type).
    let (status, _, _) = send(addr, "POST", "/v1/parcels", &[("host", &host)], &parcel);
    assert_eq!(status, 415);
    let chunked = format!("{:x}\r\n{parcel}\r\n0\r\n\r\n", parcel.len());
    let te = ("transfer-encoding", "chunked");
    let (status, _, _) = send(
        addr,
        "POST",
        "/v1/parcels",
        &[("host", &host), te],
        &chunked,
    );
    assert_eq!(status, 415, "chunked, without a type");
    // An empty chunked body without a type is no body (ureq sends those).
    let (status, _, body) = send(
        addr,
        "POST",
        "/v1/runs/0123/cancel",
        &[("host", &host), te],
        "0\r\n\r\n",
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (404, "run_not_found"),
        "{body}"
    );
    // JSON, but from another origin (a page on another port of this machine, too).
    let json_type = ("content-type", "application/json");
    for origin in [
        format!("http://127.0.0.1:{}", addr.port() + 1),
        "http://evil.example".into(),
        "null".into(),
    ] {
        let (status, _, body) = send(
            addr,
            "POST",
            "/v1/parcels",
            &[("host", &host), json_type, ("origin", &origin)],
            &parcel,
        );
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "cross_origin"),
            "{origin}: {body}"
        );
    }
    let (status, _, _) = send(
        addr,
        "POST",
        "/v1/parcels",
        &[("host", &host), json_type, ("sec-fetch-site", "same-site")],
        &parcel,
    );
    assert_eq!(status, 403, "another port of this host is another origin");
    // Header-less writes from a page: cancel, prune.
    let cross = [
        ("host", host.as_str()),
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    for path in ["/v1/runs/prune", "/v1/runs/0123/cancel"] {
        let (status, _, body) = send(addr, "POST", path, &cross, "");
        assert_eq!(status, 403, "{path}: {body}");
    }
    assert!(
        server.get("/v1/parcels").1["parcels"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "no parcel was built"
    );
    // The server's own pages may write.
    let (status, _, body) = send(
        addr,
        "POST",
        "/v1/parcels",
        &[
            ("host", &host),
            json_type,
            ("origin", &format!("http://{host}")),
            ("sec-fetch-site", "same-origin"),
        ],
        &parcel,
    );
    assert_eq!(status, 201, "{body}");
    // Webhooks take any content type from anywhere (their secret guards them).
    let (status, _, body) = send(
        addr,
        "POST",
        "/hooks/nobody",
        &[
            ("host", &host),
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        "a=1",
    );
    assert_eq!(
        status, 404,
        "no service, but not refused for its type or origin: {body}"
    );
}

#[test]
fn prune_without_a_body_removes_nothing() {
    let server = TestServer::start_configured(|s| s);
    let name = server.noop_parcel();
    let (status, run) = server.post("/v1/runs", &json!({"parcel": name, "start": false}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("an id").to_string();
    let (status, _) = server.post(&format!("/v1/runs/{id}/cancel"), &json!({}));
    assert_eq!(status, 200);
    let (status, body) = server.call("POST", "/v1/runs/prune", &[], None);
    assert_eq!(
        (status, code(&body.to_string()).as_str()),
        (400, "bad_request"),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("`{}`"),
        "{body}"
    );
    assert_eq!(runs(&server), 1, "nothing was removed");
    let (status, body) = server.post("/v1/runs/prune", &json!({}));
    assert_eq!(
        (status, body["removed"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
}

/// A token of the server's store.
fn token(server: &TestServer, name: &str) -> String {
    let layout = server.layout();
    block_on(async {
        let store: SharedStore =
            Arc::new(SqliteStore::open(&layout.db(), Duration::from_secs(5)).expect("the store"));
        dispatch_server::auth::create(
            &store,
            name,
            dispatch_store::TokenScope::Admin,
            None,
            Vec::new(),
        )
        .await
        .expect("a token")
        .1
    })
}

#[test]
fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let server = TestServer::start_configured(|s| {
        s.with_required_auth(true).with_limits(HttpLimits {
            token_rate: 1,
            ..HttpLimits::default()
        })
    });
    let (ada, bob) = (token(&server, "ada"), token(&server, "bob"));
    let auth = |t: &str| format!("Bearer {t}");
    let get = |t: &str| server.call("GET", "/v1/runs", &[("authorization", &auth(t))], None);
    // A burst of ten seconds' worth passes; then the bucket is empty.
    let mut limited = None;
    for _ in 0..30 {
        let (status, body) = get(&ada);
        if status == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let body = limited.expect("the token was limited within its burst and a little");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let base = format!("http://{}", server.addr);
    let answer = dispatch_server::client::request(
        &base,
        "GET",
        "/v1/runs",
        &[("authorization", &auth(&ada))],
        None,
    )
    .expect("an answer");
    assert_eq!(answer.status, 429);
    let retry: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "{retry}");
    assert_eq!(get(&bob).0, 200, "another token has its own bucket");
    assert_eq!(
        server.get("/healthz").0,
        200,
        "health needs no token and has no bucket"
    );
}
