//! Model calls over a direct HTTP/2 connection (`dispatch_http::h2`), to
//! the scripted mock over TLS on loopback: what goes that way, and what is
//! left to reqwest (which then reports what is wrong in its own words).

use std::net::SocketAddr;

use dispatch_http::ExtraCa;
use dispatch_http::h2::Direct;
use dispatch_test_support::mock::{MockServer, Script, Step};
use dispatch_test_support::proxy::Proxy;
use http_body_util::BodyExt;

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

async fn tls_mock(steps: Vec<Step>) -> MockServer {
    MockServer::start_tls_on(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Script::with_steps(steps),
    )
    .await
    .expect("the mock listens")
}

fn body() -> bytes::Bytes {
    bytes::Bytes::from_static(
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
}

/// The text of a streamed chat completion.
fn content(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[tokio::test]
async fn calls_to_an_https_origin_share_its_http2_connection() {
    let mock = tls_mock(vec![Step::text("first"), Step::text("second")]).await;
    let ca = mock.ca_pem().expect("a TLS mock has a CA");
    let direct = Direct::new("test", ExtraCa::File(Some(&ca))).expect("builds");
    let url = format!("{}/chat/completions", mock.base_url());
    for expected in ["first", "second"] {
        let response = direct
            .post(&url, JSON, body())
            .await
            .expect("an h2 origin is direct")
            .expect("answered");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert!(response.status().is_success(), "{}", response.status());
        let text = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(content(&text), expected, "{text}");
    }
    assert_eq!(mock.request_count(), 2);
    let sent = &mock.requests()[0];
    assert_eq!(sent.body["model"], "gpt-4o-mini", "the body went as it was");
    let agent = sent.headers.iter().find(|(k, _)| k == "user-agent");
    assert!(
        agent.is_some_and(|(_, v)| v.starts_with("dispatch-test/")),
        "{:?}",
        sent.headers
    );
}

#[tokio::test]
async fn what_is_not_direct_is_left_to_reqwest() {
    let mock = tls_mock(vec![Step::text("never")]).await;
    let url = format!("{}/chat/completions", mock.base_url());
    // A certificate the connection does not trust: reqwest says why.
    let untrusting = Direct::new("test", ExtraCa::File(None)).expect("builds");
    assert!(untrusting.post(&url, JSON, body()).await.is_err());
    // Plain HTTP, and a port nobody listens on (at once, and again while
    // that origin is left to reqwest).
    let ca = mock.ca_pem().expect("a TLS mock has a CA");
    let direct = Direct::new("test", ExtraCa::File(Some(&ca))).expect("builds");
    let plain = url.replacen("https://", "http://", 1);
    // What was not sent comes back, to go by reqwest.
    let back = direct.post(&plain, JSON, body()).await.err();
    assert_eq!(back, Some(body()), "the body is given back as it was");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = closed.local_addr().expect("its address").port();
    drop(closed);
    let nobody = format!("https://127.0.0.1:{port}/chat/completions");
    assert!(direct.post(&nobody, JSON, body()).await.is_err());
    assert!(direct.post(&nobody, JSON, body()).await.is_err());
    assert_eq!(mock.request_count(), 0, "nothing was sent");
}

/// A connection cut under the process (a restart, a proxy's idle timeout)
/// is opened again by the next call.
#[tokio::test]
async fn a_cut_connection_is_opened_again() {
    let mock = tls_mock(vec![Step::text("before"), Step::text("after")]).await;
    let ca = mock.ca_pem().expect("a TLS mock has a CA");
    let base = mock.base_url();
    let rest = base.trim_start_matches("https://");
    let (upstream, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let proxy = Proxy::start(upstream.parse().expect("an address")).expect("the proxy");
    let url = format!("https://{}{path}/chat/completions", proxy.addr());
    let direct = Direct::new("test", ExtraCa::File(Some(&ca))).expect("builds");
    let answer = |r: Result<
        Result<hyper::Response<dispatch_http::h2::Body>, dispatch_http::h2::Error>,
        bytes::Bytes,
    >| async {
        let response = r.ok()?.ok()?;
        let text = response.into_body().collect().await.ok()?.to_bytes();
        Some(content(&String::from_utf8_lossy(&text)))
    };
    let first = answer(direct.post(&url, JSON, body()).await).await;
    assert_eq!(first.as_deref(), Some("before"));
    proxy.down();
    proxy.heal();
    // The cut reaches the connection's task a moment later; a call sent on
    // it meanwhile fails (and a model call is tried again by its loop).
    let mut after = None;
    for _ in 0..100 {
        after = answer(direct.post(&url, JSON, body()).await).await;
        if after.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(after.as_deref(), Some("after"), "over a new connection");
    assert_eq!(mock.request_count(), 2);
}

/// Calls beyond the streams a server allows a connection go out at once on
/// another connection, not queued behind the first ones.
#[tokio::test]
async fn calls_beyond_a_connections_streams_open_another_connection() {
    // Every call is answered after ten minutes: they all wait.
    let mut held = Step::text("late");
    if let Step::Text { delay_ms, .. } = &mut held {
        *delay_ms = 600_000;
    }
    let script = Script {
        steps: Vec::new(),
        fallback: held,
        record_bodies: false,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mock = MockServer::start_tls_capped(addr, script, Some(2))
        .await
        .expect("the mock listens");
    let ca = mock.ca_pem().expect("a TLS mock has a CA");
    let direct =
        std::sync::Arc::new(Direct::new("test", ExtraCa::File(Some(&ca))).expect("builds"));
    let url = format!("{}/chat/completions", mock.base_url());
    // The first call learns the server's limit with the connection.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (direct, url) = (direct.clone(), url.clone());
        calls.spawn(async move {
            direct
                .post(&url, JSON, body())
                .await
                .map(|r| r.is_ok())
                .ok()
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A deadlock detector, not a speed limit: held on one connection, no
    // more than 2 would ever arrive while the answers wait ten minutes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mock.request_count() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 5 calls reached the server: the rest wait behind its 2 streams",
            mock.request_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    calls.abort_all();
}
