//! Completion callbacks: signed, retried on 5xx, recorded as events.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use common::{CALLBACK_SECRET, Db, TestServer};
use dispatch_server::callback::signature;
use serde_json::{Value, json};

/// One received request: its signature header and body.
struct Received {
    signature: String,
    body: Vec<u8>,
}

/// A receiver on an ephemeral port answering `statuses` in turn.
fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hooks/done", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut length, mut signature) = (0usize, String::new());
            let mut line = String::new();
            loop {
                line.clear();
                reader.read_line(&mut line).expect("a header line");
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        "dispatch-signature" => signature = v.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("the body");
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send(Received { signature, body });
        }
    });
    (url, rx)
}

#[test]
fn a_finished_run_is_posted_signed_and_retried_after_a_5xx() {
    posted_signed_and_retried(Db::Sqlite);
}

/// On PostgreSQL the finished run's notification wakes the dispatcher (its
/// safety-net look at the outbox is 30 s away: the first delivery must come
/// well before).
#[test]
fn on_postgres_a_finished_run_wakes_the_callback_dispatcher() {
    posted_signed_and_retried(Db::Postgres);
}

fn posted_signed_and_retried(db: Db) {
    // The receiver is on loopback: allowed only by the operator's flag.
    let Some(server) = TestServer::start_with_callbacks(db, 2, true) else {
        return;
    };
    let parcel = server.noop_parcel();
    let (url, received) = receiver(vec![503, 200]);
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel, "callback_url": url}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    for _ in 0..2 {
        let got = received
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a delivery");
        let body: Value = serde_json::from_slice(&got.body).expect("JSON body");
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["status"], "succeeded");
        // The run as the API answers it, typed.
        serde_json::from_slice::<dispatch_api::Run>(&got.body).expect("a dispatch_api::Run");
        let (status, answered) = server.get(&format!("/v1/runs/{id}"));
        assert_eq!(status, 200, "{answered}");
        assert_eq!(body, answered, "the body is GET /v1/runs/{{id}}'s answer");
        let t: u64 = got
            .signature
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .expect("t=<unix>");
        assert_eq!(
            got.signature,
            signature(CALLBACK_SECRET.as_bytes(), t, &got.body),
            "HMAC-SHA256 over `t.body`"
        );
    }
    let events = server.wait_for(&format!("/v1/runs/{id}/events?format=json"), |doc| {
        doc["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "callback"))
    });
    let outcome = events["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "callback"))
        .expect("a callback event")["data"]
        .clone();
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(outcome["attempts"], 2);
    assert_eq!(outcome["status"], 200);
}

#[test]
fn a_callback_url_must_be_http_or_https() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    let (status, body) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "callback_url": "ftp://example"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
}

#[test]
fn a_callback_outlives_the_server_that_registered_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let (url, received) = receiver(vec![200]);
    let id = {
        // No workers here: the run is still queued when this server stops.
        let first = TestServer::start_on_with_callbacks(root.clone(), 0, true);
        let parcel = first.noop_parcel();
        let (status, run) = first.post("/v1/runs", &json!({"parcel": parcel, "callback_url": url}));
        assert_eq!(status, 201, "{run}");
        run["id"].as_str().expect("id").to_string()
    };
    let second = TestServer::start_on_with_callbacks(root, 2, true);
    let got = received
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the second server delivers it");
    let body: Value = serde_json::from_slice(&got.body).expect("JSON body");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "succeeded");
    let events = second.wait_for(&format!("/v1/runs/{id}/events?format=json"), |doc| {
        doc["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "callback"))
    });
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|k| k.starts_with("callback"))
        .collect();
    assert_eq!(
        kinds,
        vec!["callback_registered", "callback"],
        "delivered once"
    );
}

/// SSRF: by default a token holder cannot make the server POST to the cloud
/// metadata service, its own loopback services or link-local addresses.
#[test]
fn callbacks_to_metadata_loopback_and_link_local_addresses_are_refused() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        format!("http://{}/v1/runs", server.addr).as_str(),
        "http://localhost:6379/",
        "http://[fe80::1]:80/",
        "http://0.0.0.0:8077/",
    ] {
        let (status, body) =
            server.post("/v1/runs", &json!({"parcel": parcel, "callback_url": url}));
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{url}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("--allow-private-callbacks"),
            "{url}: {message}"
        );
    }
    let (_, runs) = server.get("/v1/runs");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
}

/// https receivers are accepted as callbacks.
#[test]
fn an_https_callback_url_is_accepted() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    let (status, body) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "callback_url": "https://hooks.example.com/done"}),
    );
    assert_eq!(status, 201, "{body}");
}

/// A callback registered while loopback was allowed is checked again when
/// it is sent: a server without the flag refuses it, records why, and the
/// receiver hears nothing.
#[test]
fn a_callback_is_checked_again_when_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let (url, received) = receiver(vec![200]);
    let id = {
        let first = TestServer::start_on_with_callbacks(root.clone(), 0, true);
        let parcel = first.noop_parcel();
        let (status, run) = first.post("/v1/runs", &json!({"parcel": parcel, "callback_url": url}));
        assert_eq!(status, 201, "{run}");
        run["id"].as_str().expect("id").to_string()
    };
    let second = TestServer::start_on_with_callbacks(root, 2, false);
    let events = second.wait_for(&format!("/v1/runs/{id}/events?format=json"), |doc| {
        doc["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "callback"))
    });
    let outcome = events["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "callback"))
        .expect("a callback event")["data"]
        .clone();
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["attempts"], 0, "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(error.contains("loopback"), "{error}");
    assert!(received.try_recv().is_err(), "nothing was sent");
}
