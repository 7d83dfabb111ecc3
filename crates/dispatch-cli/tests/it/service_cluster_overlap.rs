//! A cluster service keeps its overlap policy as a local one does: under
//! `skip` a webhook request arriving while a wake runs gets 503 and wakes
//! nothing; under `queue` one wake runs at a time and at most
//! `--max-pending` wait. Refused webhook requests are counted in
//! `requests_rejected`, where `inspect-run` shows them. A real `dispatch
//! server` (its own workers) and heartbeats that wait for a file.

use crate::remote_common;

use std::path::Path;

use remote_common::{Client, Server};
use serde_json::{Value, json};

fn post(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body, _) = post_with_headers(server, path, headers);
    (status, body)
}

/// As [`post`], with the answer's `Retry-After`.
fn post_with_headers(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let response = dispatch_server::client::request(
        &format!("http://{}", server.host),
        "POST",
        path,
        headers,
        Some(b"{}"),
    )
    .expect("the server answers");
    let status = response.status;
    let retry_after = response.header("retry-after").map(str::to_string);
    let text = response.text().expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        retry_after,
    )
}

/// A webhook service `name` whose heartbeats wait until `gate` exists.
fn serve(client: &Client, name: &str, gate: &Path, overlap: &[&str]) -> String {
    let dir = client.agent_with(
        name,
        &format!(
            "while [ ! -e '{}' ]; do sleep 0.02; done\necho done\n",
            gate.display()
        ),
        "LISTEN 127.0.0.1:0\n",
    );
    let mut args = vec!["serve", &dir, "--listen-shared-secret", "s3cret"];
    args.extend_from_slice(overlap);
    client.ok(&args)
}

const SECRET: [(&str, &str); 1] = [("x-dispatch-secret", "s3cret")];

#[test]
fn skip_answers_503_while_a_wake_runs_and_refusals_are_counted() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let gate = client.dir.path().join("go-skip");
    let id = serve(&client, "skippy", &gate, &["--overlap", "skip"]);
    let (status, first) = post(&server, "/hooks/skippy", &SECRET);
    assert_eq!(status, 202, "{first}");
    let first = first["run_id"].as_str().expect("a run id").to_string();
    let (status, busy, retry_after) = post_with_headers(&server, "/hooks/skippy", &SECRET);
    assert_eq!(
        (status, busy["code"].as_str()),
        (503, Some("busy")),
        "{busy}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"), "as a local service says");
    assert!(
        busy["message"]
            .as_str()
            .is_some_and(|m| m.contains("overlap: skip")),
        "{busy}"
    );
    // A request without the secret is refused, and counted too.
    let (status, _) = post(&server, "/hooks/skippy", &[]);
    assert_eq!(status, 401);
    std::fs::write(&gate, "").expect("open the gate");
    server.wait_for(&format!("/v1/runs/{first}"), |r| r["status"] == "succeeded");
    let (status, again) = post(&server, "/hooks/skippy", &SECRET);
    assert_eq!(status, 202, "once the wake ended: {again}");
    let doc = client.inspect(&id);
    let listener = &doc["service"]["listeners"][0];
    assert_eq!(listener["requests_handled"], 2, "{doc}");
    assert_eq!(listener["requests_rejected"], 2, "{doc}");
}

#[test]
fn queue_runs_one_wake_at_a_time_and_bounds_the_waiting() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let gate = client.dir.path().join("go-queue");
    let id = serve(&client, "queued", &gate, &["--max-pending", "1"]);
    let (status, first) = post(&server, "/hooks/queued", &SECRET);
    assert_eq!(status, 202, "{first}");
    let first = first["run_id"].as_str().expect("a run id").to_string();
    server.wait_for(&format!("/v1/runs/{first}"), |r| r["status"] == "running");
    let (status, second) = post(&server, "/hooks/queued", &SECRET);
    assert_eq!(status, 202, "one may wait: {second}");
    let second = second["run_id"].as_str().expect("a run id").to_string();
    let (status, full) = post(&server, "/hooks/queued", &SECRET);
    assert_eq!(
        (status, full["code"].as_str()),
        (503, Some("busy")),
        "{full}"
    );
    // The server has free worker slots, yet the second waits its turn.
    let (_, waiting) = server.call("GET", &format!("/v1/runs/{second}"), None);
    assert_eq!(waiting["status"], "queued", "{waiting}");
    std::fs::write(&gate, "").expect("open the gate");
    for run in [&first, &second] {
        server.wait_for(&format!("/v1/runs/{run}"), |r| r["status"] == "succeeded");
    }
    let doc = client.inspect(&id);
    let listener = &doc["service"]["listeners"][0];
    assert_eq!(
        (
            &listener["requests_handled"],
            &listener["requests_rejected"]
        ),
        (&json!(2), &json!(1)),
        "{doc}"
    );
}
