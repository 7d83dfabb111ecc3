//! Malformed input to the API gets a 4xx in the `{code, message}` shape
//! naming what is wrong, on PostgreSQL too (which refuses NUL bytes in
//! text), and nothing is stored.

use crate::common;

use common::{Db, TestServer};
use serde_json::json;

#[test]
fn nul_bytes_and_oversized_bodies_are_4xx_with_the_json_error_shape() {
    let Some(server) = TestServer::start(Db::Postgres, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    for (body, field) in [
        (
            json!({"parcel": parcel, "labels": ["ok", "bad\u{0}label"]}),
            "labels[1]",
        ),
        (
            json!({"parcel": parcel, "idempotency_key": "k\u{0}"}),
            "idempotency_key",
        ),
        (json!({"parcel": parcel, "session": "s\u{0}"}), "session"),
    ] {
        let (status, answer) = server.post("/v1/runs", &body);
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["code"], "bad_request", "{answer}");
        let message = answer["message"].as_str().expect("a message");
        assert!(
            message.contains(field) && message.contains("NUL"),
            "{message}"
        );
    }
    // A NUL inside the payload is data, kept as JSON text.
    let (status, answer) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "payload": {"text": "a\u{0}b"}}),
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = server.get("/v1/runs?label=a%00b");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .expect("message")
            .contains("`label`"),
        "{answer}"
    );
    // 10 MB: the server answers before it read the body, so write it as curl
    // would, ignoring a closed pipe, then read the answer.
    let (status, answer) = oversized_post(&server.addr.to_string(), 10 * 1024 * 1024);
    assert_eq!(status, 413, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a JSON error body");
    assert_eq!(answer["code"], "payload_too_large", "{answer}");
    let (_, list) = server.get("/v1/runs");
    assert_eq!(
        list["runs"].as_array().map(Vec::len),
        Some(1),
        "only the valid run was stored: {list}"
    );
}

/// POSTs `size` bytes to `/v1/runs` over a raw connection; the status and body text.
fn oversized_post(addr: &str, size: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connects");
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).expect("headers");
    // The server answers once the body crosses its limit and closes; keep
    // writing until it does (the answer waits in the socket), then read it.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("a read timeout");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < size && conn.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn unknown_query_parameters_and_a_service_operation_are_400s() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    let (status, answer) = server.get("/v1/runs?parcels=bench");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "bad_request");
    let message = answer["message"].as_str().expect("a message");
    assert!(
        message.contains("`parcels`") && message.contains("parcel,"),
        "{message}"
    );
    let (status, _) = server.get("/v1/runs?parcel=bench&limit=5");
    assert_eq!(status, 200, "the known ones still work");
    let (status, answer) = server.get("/v1/approvals?pendin=true");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "operation": "service"}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .expect("message")
            .contains("dispatch serve"),
        "{answer}"
    );
    let (_, list) = server.get("/v1/runs");
    assert_eq!(
        list["runs"].as_array().map(Vec::len),
        Some(0),
        "nothing was created"
    );
    // Values outside what the OpenAPI document allows are refused, not
    // quietly bent (a contract fuzzer's finds).
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("id");
    for bad in ["wait=-1", "wait=61", "wait=soon"] {
        let (status, answer) = server.get(&format!("/v1/runs/{id}?{bad}"));
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("wait=")),
            "{answer}"
        );
    }
    let (status, _) = server.get(&format!("/v1/runs/{id}?wait=0.5"));
    assert_eq!(status, 200);
    let (status, answer) = server.get(&format!("/v1/runs/{id}/logs?follow=-634365"));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "bad_request");
}

#[test]
fn a_bad_upload_names_the_file_and_line_and_no_server_path() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let (status, answer) = server.post(
        "/v1/parcels",
        &json!({"files": {"Agentfile": "FROM process\nNAME x\nCOMMAND true\nBOGUS y\n"}}),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "invalid_parcel");
    let message = answer["message"].as_str().expect("a message");
    assert!(
        message.starts_with("Agentfile:") && message.contains("line 4"),
        "{message}"
    );
    assert!(
        !message.contains("upload-") && !message.contains("/tmp"),
        "{message}"
    );
    let (status, answer) = server.post(
        "/v1/parcels",
        &json!({"files": {"Agentfile": "FROM process\nNAME x\nCOMMAND true\n"}, "executable": ["nope.sh"]}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .expect("message")
            .contains("`nope.sh`"),
        "{answer}"
    );
}

/// A hostile or broken tar upload (`POST /v1/parcels`, `application/x-tar`)
/// is a 400 naming what is wrong; nothing is written outside the upload
/// and nothing is stored.
#[test]
fn a_bad_parcel_tar_is_a_400_naming_the_entry() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let client = dispatch_server::client::Client::new(&format!("http://{}", server.addr), None)
        .expect("client");
    let send = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let response = client
            .request_file("POST", "/v1/parcels", &[], "application/x-tar", &path)
            .expect("an answer");
        let status = response.status;
        let answer: serde_json::Value =
            serde_json::from_str(&response.text().expect("text")).expect("JSON");
        (status, answer)
    };
    let escape = tar_of(|b| {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..10].copy_from_slice(b"../escaped");
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"hi"[..]).expect("append");
    });
    let link = tar_of(|b| {
        agentfile(b);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "passwd", "/etc/passwd")
            .expect("link");
    });
    let no_agentfile = tar_of(|b| {
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "agent.sh", &b"hi"[..])
            .expect("append");
    });
    for (name, bytes, says) in [
        ("escape.tar", escape, "not a plain relative path"),
        ("link.tar", link, "not a regular file"),
        ("none.tar", no_agentfile, "no `Agentfile`"),
        ("garbage.tar", vec![7u8; 700], "not a tar archive"),
    ] {
        let (status, answer) = send(name, &bytes);
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["code"], "bad_request", "{name}: {answer}");
        let message = answer["message"].as_str().expect("a message");
        assert!(message.contains(says), "{name}: {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
    assert!(!server.layout().root().join("escaped").exists());
    assert!(
        !server
            .layout()
            .root()
            .parent()
            .expect("parent")
            .join("escaped")
            .exists()
    );
    let (_, listed) = server.get("/v1/parcels");
    assert_eq!(listed["parcels"], json!([]), "{listed}");
}

/// A tar archive made by `fill`.
fn tar_of(fill: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    fill(&mut b);
    b.into_inner().expect("a tar")
}

fn agentfile(b: &mut tar::Builder<Vec<u8>>) {
    let text = b"FROM noop\nNAME bad\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "Agentfile", &text[..])
        .expect("append");
}
