//! A native agent on the cluster: `dispatch server` with in-process workers
//! on PostgreSQL runs the model loop as a task; its text reaches the API's
//! SSE stream as `delta` events while it is generated.

use crate::native_common;
use crate::remote_common;

use std::io::{BufRead, BufReader};

use dispatch_test_support::http;
use native_common::{Mock, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::json;

#[test]
fn a_worker_on_postgres_runs_a_native_agent_and_streams_its_text_over_sse() {
    let Some(db) = postgres() else { return };
    // No workers in the server: a `dispatch worker` process holds the run,
    // and its live text reaches the server's SSE stream through the database.
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
    let mut slow = text("{\"category\":\"billing\"}", 11, 6);
    slow["first_token_delay_ms"] = json!(1_500);
    let mock = Mock::start(json!([slow]));
    let dir = client.dir.path().join("native");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME native\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let id = client.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        "{\"ticket\":\"charged twice\"}",
    ]);
    // Follow the events as they happen: the delta arrives before the run ends.
    let url = format!("http://{}/v1/runs/{id}/events", server.host);
    let response = http::get(&url).call().expect("the stream opens");
    let mut saw_delta = false;
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.expect("a line");
        if line == "event: delta" {
            saw_delta = true;
        }
        if line.starts_with("event: state") && saw_delta {
            break;
        }
        if line.contains("\"succeeded\"") {
            break;
        }
    }
    assert!(saw_delta, "a delta event before the end");
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    assert_eq!(run["output"], json!({"category": "billing"}));
    let (_, events) = server.call("GET", &format!("/v1/runs/{id}/events?format=json"), None);
    let calls: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "model_call")
        .collect();
    assert_eq!(calls.len(), 1, "{events}");
    assert_eq!(calls[0]["data"]["input_tokens"], 11);
    assert_eq!(mock.requests().len(), 1);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = worker.wait();
}

#[test]
fn stop_cancels_a_native_run_held_by_a_worker_at_once() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &[]);
    let client = Client::new(&server);
    let mut slow = text("never", 1, 1);
    slow["delay_ms"] = json!(60_000);
    let mock = Mock::start(json!([slow]));
    let dir = client.dir.path().join("slow");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME slow\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    // A cost limit on a model without a price is refused by the server too.
    let unpriced = client.dir.path().join("unpriced");
    std::fs::create_dir_all(&unpriced).expect("dir");
    std::fs::write(
        unpriced.join("Agentfile"),
        format!(
            "FROM agent\nNAME unpriced\nMODEL llama3.2 BASE_URL {}\nLIMIT COST 1\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let err = client.fails(&["run", unpriced.to_str().expect("utf-8"), "--detach"], 125);
    assert!(err.contains("LIMIT COST cannot be enforced"), "{err}");
    let id = client.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mock.requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the model"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    client.ok(&["stop", &id]);
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "cancelled");
    assert_eq!(run["status"], "cancelled");
}

#[test]
fn a_worker_without_a_declared_secret_fails_the_run_at_once_naming_it() {
    let Some(db) = postgres() else { return };
    // The server has the secret (it accepts the run); the worker does not.
    let server = Server::start_with_env(
        Some(db.url()),
        &["--workers", "0"],
        &[("DISPATCH_TEST_ONLY_SERVER_SECRET", "s3cret")],
    );
    let state = tempfile::tempdir().expect("tempdir");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db.url(), "--slots", "2"])
        .env("DISPATCH_ROOT", state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .env_remove("DISPATCH_TEST_ONLY_SERVER_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the worker starts");
    let client = Client::new(&server);
    let dir = client.agent_with(
        "secretive",
        "echo \"secret is [$DISPATCH_TEST_ONLY_SERVER_SECRET]\"",
        "SECRET DISPATCH_TEST_ONLY_SERVER_SECRET\n",
    );
    let id = client.ok(&["run", &dir, "--detach"]);
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["state"]["status"]
            .as_str()
            .is_some_and(|s| s != "queued" && s != "starting" && s != "running")
    });
    assert_eq!(run["status"], "failed", "{run}");
    let reason = run["state"]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("DISPATCH_TEST_ONLY_SERVER_SECRET") && reason.contains("not set"),
        "{reason}"
    );
    assert_eq!(
        run["attempt"], 1,
        "not retried: no worker may run it without the secret"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = worker.wait();
}

/// Starts a `dispatch worker` process on `db` with its own state directory.
fn worker(db: &str, state: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db, "--slots", "1"])
        .env("DISPATCH_ROOT", state.join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the worker starts")
}

#[test]
fn memory_tools_are_shared_by_two_workers_and_the_api_serves_the_bill_of_materials() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "memory_put", "arguments": {"key": "k", "value": 42}}]},
        text("stored", 1, 1),
        {"kind": "tool_calls", "calls": [{"name": "memory_get", "arguments": {"key": "k"}}]},
        text("read", 1, 1),
    ]));
    let dir = client.dir.path().join("memo");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME memo\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL BUILTIN memory_get memory_put\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    // One worker writes; it leaves, another (with its own disk) reads.
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let mut first = worker(db.url(), a.path());
    let id = client.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = first.wait();
    let mut second = worker(db.url(), b.path());
    let id2 = client.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    server.wait_for(&format!("/v1/runs/{id2}"), |r| r["status"] == "succeeded");
    let (_, events) = server.call("GET", &format!("/v1/runs/{id2}/events?format=json"), None);
    let got: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "tool_call")
        .collect();
    assert_eq!(got.len(), 1, "{events}");
    assert_eq!(got[0]["data"]["output"], "42", "{}", got[0]);
    let (status, bom) = server.call("GET", &format!("/v1/runs/{id2}/bom"), None);
    assert_eq!(status, 200, "{bom}");
    assert_eq!(bom["attempts"].as_array().map(Vec::len), Some(1), "{bom}");
    let names: Vec<&str> = bom["bom"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["memory_get", "memory_put"]);
    assert_eq!(bom["bom"]["models"][0]["provider"], "openai_chat");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = second.wait();
}

#[test]
fn a_paused_tool_call_on_a_worker_is_approved_through_the_api() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "7", "amount": 90}}]},
        text("refunded", 1, 1),
    ]));
    let dir = client.dir.path().join("refunder");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("refund.sh"), "cat\n").expect("tool");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME refunder\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL refund.sh APPROVAL confirm RISK high\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let state = tempfile::tempdir().expect("state");
    let mut w = worker(db.url(), state.path());
    let id = client.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "paused");
    let (_, pending) = server.call("GET", "/v1/approvals?pending=true", None);
    assert_eq!(pending["approvals"][0]["id"], "refund-1", "{pending}");
    assert_eq!(
        pending["approvals"][0]["details"]["risk"], "high",
        "{pending}"
    );
    // Edited arguments, decided on the server; the worker reads it from the store.
    let (status, body) = server.call(
        "POST",
        &format!("/v1/runs/{id}/approvals/refund-1"),
        Some(&json!({"decision": "approve", "by": "ana", "input": {"order": "7", "amount": 45}})),
    );
    assert_eq!(status, 200, "{body}");
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    assert_eq!(run["status"], "succeeded");
    let (_, events) = server.call("GET", &format!("/v1/runs/{id}/events?format=json"), None);
    let call = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "tool_call")
        .expect("the call")
        .clone();
    assert_eq!(call["data"]["approval"]["by"], "ana");
    let ran: serde_json::Value =
        serde_json::from_str(call["data"]["output"].as_str().expect("text")).expect("json");
    assert_eq!(ran["amount"], 45, "the edited arguments ran");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = w.wait();
}

#[test]
fn a_process_agent_on_a_worker_sees_an_approval_decided_through_the_api() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let dir = client.dir.path().join("shipper");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("agent.sh"),
        "echo '{\"type\":\"approval\",\"id\":\"ship\",\"summary\":\"Ship it?\"}' >> \"$DISPATCH_EVENTS\"\n\
         while [ ! -f \"$DISPATCH_APPROVALS/ship.json\" ]; do sleep 0.05; done\n\
         cat \"$DISPATCH_APPROVALS/ship.json\" > \"$DISPATCH_OUTPUT\"\n",
    )
    .expect("agent");
    std::fs::write(
        dir.join("Agentfile"),
        "FROM process\nNAME shipper\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
    )
    .expect("Agentfile");
    // The worker has a disk of its own: the decision reaches it through the store.
    let state = tempfile::tempdir().expect("state");
    let mut w = worker(db.url(), state.path());
    let id = client.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "paused");
    let (status, body) = server.call(
        "POST",
        &format!("/v1/runs/{id}/approvals/ship"),
        Some(&json!({"decision": "approve", "by": "ana", "rationale": "go"})),
    );
    assert_eq!(status, 200, "{body}");
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["decision"], "approve", "{run}");
    assert_eq!(run["output"]["by"], "ana", "{run}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = w.wait();
}

#[test]
fn a_process_agent_s_session_file_follows_the_session_to_another_worker() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let dir = client.dir.path().join("counter");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("agent.sh"),
        "n=$(cat \"$DISPATCH_SESSION_FILE\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$DISPATCH_SESSION_FILE\"\necho $n > \"$DISPATCH_OUTPUT\"\n",
    )
    .expect("agent");
    std::fs::write(
        dir.join("Agentfile"),
        "FROM process\nNAME counter\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
    )
    .expect("Agentfile");
    let turn = |state: &std::path::Path| {
        let mut w = worker(db.url(), state);
        let id = client.ok(&[
            "run",
            dir.to_str().expect("utf-8"),
            "--detach",
            "--session",
            "alice",
        ]);
        let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = w.wait();
        run["output"].clone()
    };
    // Each turn on a worker with a disk of its own.
    let (a, b, c) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
        tempfile::tempdir().expect("c"),
    );
    assert_eq!(turn(a.path()), json!(1));
    assert_eq!(turn(b.path()), json!(2));
    assert_eq!(turn(c.path()), json!(3));
    assert_eq!(
        turn(a.path()),
        json!(4),
        "the first worker's stale copy is replaced"
    );
}

#[test]
fn a_worker_runs_a_codex_agent_and_a_stop_ends_the_clis_process_group() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("codex.log");
    let fake = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cli/codex");
    let (fake, log_text) = (fake.to_str().expect("utf-8"), log.to_str().expect("utf-8"));
    // Killed when dropped, should an assertion fail.
    let _worker = Worker::start_with_env(
        db.url(),
        "cli-worker",
        &["--slots", "2"],
        &[("DISPATCH_CODEX_BIN", fake), ("FAKE_CLI_LOG", log_text)],
    );
    let client = Client::new(&server);
    let dir = client.dir.path().join("coder");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        "FROM agent\nNAME coder\nMODEL gpt-5 PROVIDER codex\n",
    )
    .expect("Agentfile");
    let dir = dir.to_str().expect("utf-8");
    // One turn to its answer, billed and its tool calls recorded by the worker.
    let id = client.ok(&["run", dir, "--detach", "--job", "\"list it\""]);
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    assert_eq!(run["output"], json!({"files": ["codex-was-here.txt"]}));
    let (_, events) = server.call("GET", &format!("/v1/runs/{id}/events?format=json"), None);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|k| ["model_call", "tool_call"].contains(k))
        .collect();
    assert_eq!(
        kinds,
        vec!["tool_call", "tool_call", "model_call"],
        "{events}"
    );
    // A stop reaches the CLI's whole group on the worker.
    let id = client.ok(&["run", dir, "--detach", "--job", "\"sleep now\""]);
    let mut pid = None;
    common_eventually(30, || {
        pid = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("grandchild:"))
            .filter_map(|p| p.trim().parse::<i32>().ok())
            .next_back();
        pid.is_some()
    });
    let pid = pid.expect("a grandchild");
    client.ok(&["stop", &id]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "cancelled");
    common_eventually(10, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
}

/// Polls `cond` until it holds, or panics after `secs` seconds.
fn common_eventually(secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out after {secs}s");
}
