//! The model a native run calls reaches the cluster as it does a local run:
//! `LLM_BASE_URL` / `LLM_MODEL` of the shell that runs `dispatch run
//! --host`, the `--model` / `--base-url` / `--provider` flags over them, and
//! a worker's own `LLM_*` as the cluster-wide default when the run chose
//! nothing. The Agentfile's own BASE_URL is a closed loopback port: a run
//! that called it would fail, so every success below went to a mock (and
//! nothing ever leaves loopback).

use crate::native_common;
use crate::remote_common;

use native_common::{Mock, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

fn wait_succeeded(client: &Client, id: &str) -> Value {
    client.ok(&["wait", id, "--timeout-ms", "60000"]);
    let doc = client.inspect(id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    doc
}

#[test]
fn a_native_runs_model_follows_the_client_then_the_flags_then_the_worker() {
    let Some(db) = postgres() else { return };
    let client_mock = Mock::start(json!([text("from the client's url", 3, 2)]));
    let flag_mock = Mock::start(json!([text("from the flags", 3, 2)]));
    let worker_mock = Mock::start(json!([text("from the worker's default", 3, 2)]));
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _worker = Worker::start_with_env(
        db.url(),
        "w-model",
        &["--slots", "2"],
        &[("LLM_BASE_URL", &worker_mock.url())],
    );
    let client = Client::new(&server);
    let dir = client.dir.path().join("picky");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        "FROM agent\nNAME picky\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL http://127.0.0.1:9/v1\n",
    )
    .expect("Agentfile");
    let agent = dir.to_str().expect("utf-8");

    // 1. The shell's LLM_BASE_URL, sent with the run.
    let out = client
        .command()
        .env("LLM_BASE_URL", client_mock.url())
        .args(["run", agent, "--detach"])
        .output()
        .expect("dispatch runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let doc = wait_succeeded(&client, &id);
    assert_eq!(doc["output"], "from the client's url", "{doc:#}");
    assert_eq!(client_mock.requests().len(), 1);

    // 2. The flags win over the shell's variables.
    let out = client
        .command()
        .env("LLM_BASE_URL", client_mock.url())
        .args(["run", agent, "--detach", "--model", "gpt-4.1-nano"])
        .args(["--base-url", &flag_mock.url()])
        .output()
        .expect("dispatch runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_succeeded(&client, &id);
    let sent = flag_mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["model"], "gpt-4.1-nano");
    assert_eq!(client_mock.requests().len(), 1, "not the shell's URL");

    // 3. Nothing chosen: the worker's LLM_BASE_URL.
    let id = client.ok(&["run", agent, "--detach"]);
    let doc = wait_succeeded(&client, &id);
    assert_eq!(doc["output"], "from the worker's default", "{doc:#}");
    assert_eq!(worker_mock.requests().len(), 1);

    // 4. A bad choice is one line, and nothing is created.
    let err = client.fails(&["run", agent, "--detach", "--provider", "gemmini"], 125);
    assert!(
        err.contains("--provider: `gemmini` is not a provider"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
