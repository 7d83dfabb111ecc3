//! A WASM agent on the cluster: a `dispatch worker` on PostgreSQL runs the
//! component, and its model and tool calls are recorded like a native
//! agent's.

use crate::native_common;
use crate::remote_common;
use crate::wasm::{echo_then_answer, model_line, wasm_agent};

use native_common::Mock;
use remote_common::{Client, Server, postgres};
use serde_json::json;

#[test]
fn a_worker_on_postgres_runs_a_wasm_agent() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let state = tempfile::tempdir().expect("tempdir");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db.url(), "--slots", "2"])
        .env("DISPATCH_ROOT", state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the worker starts");
    let client = Client::new(&server);
    let mock = Mock::start(echo_then_answer());
    let dir = wasm_agent(
        client.dir.path(),
        "wasm-agent",
        "answer",
        &model_line(&mock),
    );
    let id = client.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        "\"say hi\"",
    ]);
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"], json!("The echo said hi."));
    let (_, events) = server.call("GET", &format!("/v1/runs/{id}/events?format=json"), None);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "model_call").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "tool_call").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(mock.requests().len(), 2);
}
