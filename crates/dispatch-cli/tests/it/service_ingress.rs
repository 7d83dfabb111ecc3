//! HTTP ingress from a real client: every status code, redaction, secrets
//! never persisted, and 200 concurrent requests all answered. The
//! listener as an A2A agent (`serve --a2a`): `service_a2a.rs`.

use crate::common;
use crate::service_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Dispatch, eventually};
use dispatch_test_support::http;
use serde_json::Value;
use service_common::{ECHO_AGENT, Service, wait_heartbeats_done};

const TOKEN: &str = "tok-7f3a9c1e5b2d4f60a8";

/// Sends a request; returns the status and the JSON body.
pub(crate) fn send(req: http::Request, body: Option<&str>) -> (u16, Value) {
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(http::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A raw request over TCP; returns the status line's code.
fn raw(addr: &str, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server may answer and close before reading everything.
    let _ = s.write_all(bytes);
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"))
}

fn hook_service<'a>(d: &'a Dispatch, extra: &[&str]) -> Service<'a> {
    let agent = d.agent_with(
        "hook",
        ECHO_AGENT,
        "SECRET HOOK_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_PATH /hook\nLISTEN_METHOD POST\nLISTEN_SECRET HOOK_TOKEN\n",
    );
    let mut args = vec![
        "serve",
        agent.to_str().expect("utf-8"),
        "--detach",
        "--listen-method",
        "put",
        "--listen-max-body-bytes",
        "1024",
        "--listen-max-header-bytes",
        "2048",
    ];
    args.extend_from_slice(extra);
    let out = d
        .command()
        .args(&args)
        .env("HOOK_TOKEN", TOKEN)
        .output()
        .expect("run dispatch");
    assert!(
        out.status.success(),
        "serve: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Service::adopt(d, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn every_ingress_status_code_from_a_real_client() {
    let d = Dispatch::new();
    let svc = hook_service(&d, &[]);
    let url = svc.url("/hook");
    let policy = &svc.service_state()["config"]["listen"];
    assert_eq!(
        policy["methods"],
        serde_json::json!(["POST", "PUT"]),
        "merged"
    );

    let (code, body) = send(
        http::post(&url).set("x-dispatch-secret", TOKEN),
        Some(r#"{"ticket":42}"#),
    );
    assert_eq!(code, 202, "{body}");
    let hb = body["run_id"]
        .as_str()
        .expect("the heartbeat id")
        .to_string();
    let (code, _) = send(
        http::put(&(url.clone() + "?source=ci")).set("authorization", &format!("Bearer {TOKEN}")),
        Some("x"),
    );
    assert_eq!(code, 202, "bearer works too");
    assert_eq!(send(http::post(&svc.url("/other")), Some("")).0, 404);
    let (code, body) = send(http::get(&url).set("x-dispatch-secret", TOKEN), None);
    assert_eq!(code, 405, "{body}");
    assert_eq!(send(http::post(&url), Some("{}")).0, 401);
    eventually(5, "the rejection count is saved without any wake", || {
        svc.service_state()["listeners"][0]["requests_rejected"] == 3
    });
    assert_eq!(
        send(
            http::post(&url).set("x-dispatch-secret", "wrong"),
            Some("{}")
        )
        .0,
        401
    );
    assert_eq!(
        send(
            http::post(&url).set("authorization", "Basic abc"),
            Some("{}")
        )
        .0,
        401
    );
    let big = "x".repeat(2048);
    assert_eq!(
        send(http::post(&url).set("x-dispatch-secret", TOKEN), Some(&big)).0,
        413
    );
    let fat = "y".repeat(4096);
    assert_eq!(
        send(
            http::post(&url)
                .set("x-dispatch-secret", TOKEN)
                .set("x-fat", &fat),
            Some("{}")
        )
        .0,
        431
    );
    let addr = svc.bound_addr();
    assert_eq!(raw(&addr, b"NOT HTTP AT ALL\r\n\r\n"), 400);
    assert_eq!(
        raw(
            &addr,
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
        ),
        400
    );
    let huge = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "z".repeat(16 * 1024)
    );
    assert_eq!(raw(&addr, huge.as_bytes()), 431, "hyper's own head limit");

    let done = d.wait_terminal(&hb);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let req = &done["output"]["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/hook");
    assert_eq!(req["body"], r#"{"ticket":42}"#);
    assert_eq!(req["headers"]["x-dispatch-secret"], "[redacted]");
    assert_eq!(req["listener"].as_str(), Some(addr.as_str()));
    assert!(
        req["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    assert_eq!(done["output"]["wake"]["reason"], "http");

    // The parcel is gone: the wake cannot run, the caller hears 500.
    let digest = d.inspect(&svc.id)["parcel_digest"]
        .as_str()
        .expect("digest")
        .to_string();
    std::fs::rename(
        d.root().join("parcels").join(&digest),
        d.root().join("parcels").join("moved-away"),
    )
    .expect("move the parcel away");
    let (code, body) = send(http::post(&url).set("x-dispatch-secret", TOKEN), Some("{}"));
    assert_eq!(code, 500, "{body}");
    std::fs::rename(
        d.root().join("parcels").join("moved-away"),
        d.root().join("parcels").join(&digest),
    )
    .expect("move the parcel back");

    wait_heartbeats_done(&svc, 10);
    eventually(5, "counters saved", || {
        let l = &svc.service_state()["listeners"][0];
        l["requests_handled"] == 2 && l["last_request_at"].is_i64()
    });
    svc.stop(5_000);
    let l = &svc.service_state()["listeners"][0];
    assert_eq!(l["requests_rejected"], 11, "{l}");
}

#[test]
fn secrets_never_reach_the_store_the_logs_or_the_agent() {
    let d = Dispatch::new();
    let cli_secret = "cli-only-9d8c7b6a5f4e3d2c";
    let svc = hook_service(&d, &["--listen-shared-secret", cli_secret]);
    let url = svc.url("/hook");
    assert_eq!(
        send(http::post(&url).set("x-dispatch-secret", TOKEN), Some("{}")).0,
        401,
        "the flag overrides LISTEN_SECRET"
    );
    let (code, body) = send(
        http::post(&url)
            .set("authorization", &format!("Bearer {cli_secret}"))
            .set("cookie", "session=c00kie-value")
            .set("proxy-authorization", "Basic cHJveHk=")
            .set("x-trace", "visible"),
        Some(r#"{"ticket":7}"#),
    );
    assert_eq!(code, 202, "{body}");
    let hb = body["run_id"].as_str().expect("id").to_string();
    let done = d.wait_terminal(&hb);
    let headers = &done["output"]["request"]["headers"];
    for h in ["authorization", "cookie", "proxy-authorization"] {
        assert_eq!(headers[h], "[redacted]", "{h}: {headers}");
    }
    assert_eq!(headers["x-trace"], "visible");
    let policy = &svc.service_state()["config"]["listen"];
    assert_eq!(policy["secret_source"], "--listen-shared-secret");
    assert_eq!(
        policy["secret_sha256"].as_str().map(str::len),
        Some(64),
        "only the digest"
    );
    svc.stop(5_000);

    let mut files = Vec::new();
    let mut dirs = vec![d.root()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("dispatch.db")));
    for f in &files {
        let bytes = std::fs::read(f).expect("read file");
        for secret in [cli_secret, TOKEN, "c00kie-value", "cHJveHk="] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} leaked into {}",
                f.display()
            );
        }
    }
}

#[test]
fn two_hundred_concurrent_requests_are_all_answered() {
    let d = Dispatch::new();
    let agent = d.agent("burst", "cat >/dev/null\n");
    let svc = Service::start(
        &d,
        &agent,
        &[
            "--listen",
            "127.0.0.1:0",
            "--overlap",
            "concurrent",
            "--max-concurrent",
            "4",
            "--max-pending",
            "150",
            "--public",
        ],
    );
    let url = svc.url("/");
    let gate = std::sync::Arc::new(std::sync::Barrier::new(200));
    let workers: Vec<_> = (0..200)
        .map(|i| {
            let (url, gate) = (url.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                send(http::post(&url), Some(&format!("{{\"n\":{i}}}"))).0
            })
        })
        .collect();
    let codes: Vec<u16> = workers
        .into_iter()
        .map(|w| w.join().expect("a client thread"))
        .collect();
    assert_eq!(codes.len(), 200, "every request answered");
    let accepted = codes.iter().filter(|&&c| c == 202).count() as u64;
    assert!(
        codes.iter().all(|&c| c == 202 || c == 503),
        "only 202 or 503 (busy): {codes:?}"
    );
    assert!(
        accepted >= 150,
        "at least max-pending were accepted: {accepted}"
    );
    eventually(10, "requests_handled matches the 202s", || {
        svc.service_state()["listeners"][0]["requests_handled"] == accepted
    });
    svc.stop(0);
    let children = svc.heartbeats().len() as u64;
    assert_eq!(children, accepted, "one heartbeat per 202");
}
