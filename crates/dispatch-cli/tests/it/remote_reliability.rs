//! The reliability options through the cluster: `POST /v1/runs` and the
//! remote CLI (`DISPATCH_HOST`) against a real `dispatch server` process on
//! an ephemeral loopback port. Idempotency on SQLite and on PostgreSQL;
//! policy, sessions, bad input, approvals and dead letters on SQLite.

use crate::remote_common;

use dispatch_test_support::eventually;
use remote_common::checks::BAD_RELIABILITY_FLAGS;
use remote_common::{Client, Server, postgres};
use serde_json::{Value, json};

/// Uploads the client's agent directory `name` as a parcel; returns its name.
fn upload(server: &Server, client: &Client, name: &str) -> String {
    let dir = std::path::Path::new(&client.dir.path().join(name)).to_path_buf();
    let mut files = serde_json::Map::new();
    for file in ["Agentfile", "agent.sh"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("agent file");
        files.insert(file.into(), json!(text));
    }
    let (status, body) = server.call("POST", "/v1/parcels", Some(&json!({ "files": files })));
    assert_eq!(status, 201, "{body}");
    body["name"].as_str().expect("a name").to_string()
}

fn terminal(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "timed_out" | "cancelled" | "stopped")
    )
}

fn same_key_answers_the_same_run(server: &Server) {
    let client = Client::new(server);
    let hello = client.agent("hello", "echo hello\n");

    let first = client.ok(&["run", "-d", &hello, "--idempotency-key", "order-42"]);
    let out = client.run(&["run", "-d", &hello, "--idempotency-key", "order-42"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "run {first} with the same idempotency key is already"
        )) && stderr.contains("not dispatching again (hint: --force dispatches anyway)"),
        "the same line as locally: {stderr}"
    );
    let forced = client.ok(&[
        "run",
        "-d",
        &hello,
        "--idempotency-key",
        "order-42",
        "--force",
    ]);
    assert_ne!(forced, first, "--force dispatches anyway");

    // --dedup: the key is parcel digest + operation + payload.
    let a = client.ok(&["run", "-d", &hello, "--dedup", "--job", "{\"n\":1}"]);
    let b = client.ok(&["run", "-d", &hello, "--dedup", "--job", "{\"n\":1}"]);
    let c = client.ok(&["run", "-d", &hello, "--dedup", "--job", "{\"n\":2}"]);
    assert_eq!(a, b, "the same payload deduplicates");
    assert_ne!(a, c, "another payload does not");

    // A foreground duplicate follows the existing run to its end.
    assert_eq!(client.ok(&["wait", &first, &forced]), "0\n0");
    let out = client.run(&["run", &hello, "--idempotency-key", "order-42"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is already succeeded"), "{stderr}");
    assert!(
        stderr.contains(&format!("run {forced} with the same")),
        "the newest run with the key answers: {stderr}"
    );

    // The API itself: 201 then 200 with the same run, like Stripe.
    let body = json!({"parcel": "hello", "idempotency_key": "raw-1"});
    let (status, created) = server.call("POST", "/v1/runs", Some(&body));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["deduplicated"], false);
    let (status, again) = server.call("POST", "/v1/runs", Some(&body));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["id"], created["id"], "same key, same run");
    let body = json!({"parcel": "hello", "idempotency_key": "raw-1", "force": true});
    let (status, forced) = server.call("POST", "/v1/runs", Some(&body));
    assert_eq!(status, 201, "{forced}");
    assert_ne!(forced["id"], created["id"]);

    let ids = client.ok(&["ps", "-a", "-q"]);
    assert_eq!(ids.lines().count(), 6, "no duplicate was created: {ids}");
}

#[test]
fn the_same_idempotency_key_answers_the_same_run_on_sqlite() {
    same_key_answers_the_same_run(&Server::start(&[]));
}

#[test]
fn the_same_idempotency_key_answers_the_same_run_on_postgres() {
    let Some(db) = postgres() else { return };
    same_key_answers_the_same_run(&Server::start_on(Some(db.url()), &[]));
}

#[test]
fn workers_apply_the_policy_sent_with_the_run() {
    let server = Server::start(&[]);
    let client = Client::new(&server);

    // --retries 2: three attempts on a worker, then the agent's exit code.
    let failing = client.agent("failing", "echo try $DISPATCH_ATTEMPT\nexit 3\n");
    let out = client.run(&["run", &failing, "--retries", "2", "--backoff", "20ms..50ms"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 attempts"), "{stderr}");
    let id = client.ok(&["ps", "-a", "-q"]);
    let doc = client.inspect(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["attempts"].as_array().map(Vec::len), Some(3), "{doc:#}");

    // The same through the API's policy object.
    let body = json!({"parcel": "failing", "policy": {"retries": 1, "backoff": "20ms..20ms"}});
    let (status, run) = server.call("POST", "/v1/runs", Some(&body));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("an id").to_string();
    let run = server.wait_for(&format!("/v1/runs/{id}"), terminal);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    let (_, attempts) = server.call("GET", &format!("/v1/runs/{id}/attempts"), None);
    assert_eq!(attempts["attempts"].as_array().map(Vec::len), Some(2));

    // --timeout: the worker stops the agent and the run is timed_out.
    let sleeper = client.agent("sleeper", "echo up\nsleep 30\n");
    let id = client.ok(&["run", "-d", &sleeper, "--timeout", "500ms"]);
    client.run(&["wait", &id]);
    let doc = client.inspect(&id);
    assert_eq!(doc["status"], "timed_out", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("timed out after 500ms"), "{reason}");
    assert_eq!(doc["attempt"], 1, "no retries asked for");

    // --max-tokens: crossing it stops the run with budget_exceeded.
    let spender = client.agent(
        "spender",
        "echo '{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":1000,\"output_tokens\":200}' >> \"$DISPATCH_EVENTS\"\nsleep 30\n",
    );
    let id = client.ok(&["run", "-d", &spender, "--max-tokens", "1000"]);
    client.run(&["wait", &id]);
    let doc = client.inspect(&id);
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("budget_exceeded"), "{doc:#}");
}

#[test]
fn a_session_is_held_by_one_live_run_at_a_time() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let sleeper = client.agent("sleeper", "sleep 30\n");
    let holder = client.ok(&["run", "-d", &sleeper, "--session", "support-42"]);
    let err = client.fails(&["run", "-d", &sleeper, "--session", "support-42"], 125);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "session `sleeper/support-42` is in use by run {holder}"
        )),
        "{err}"
    );
    let body = json!({"parcel": "sleeper", "session": "support-42"});
    let (status, answer) = server.call("POST", "/v1/runs", Some(&body));
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("session_busy")),
        "{answer}"
    );

    // The same key answers the run that holds the session, not a refusal.
    let keyed = [
        "run",
        "-d",
        &sleeper,
        "--session",
        "other",
        "--idempotency-key",
        "k",
    ];
    let first = client.ok(&keyed);
    assert_eq!(client.ok(&keyed), first);

    // Once the holder has ended, the session is free.
    client.ok(&["stop", &holder]);
    let next = client.ok(&["run", "-d", &sleeper, "--session", "support-42"]);
    assert_ne!(next, holder);
    client.ok(&["stop", &next, &first]);
}

#[test]
fn bad_reliability_options_are_400_and_one_cli_line() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let fine = client.agent("fine", "exit 0\n");
    for &(flags, needle) in BAD_RELIABILITY_FLAGS.iter().chain(&[
        (
            &["--queue-timeout", "soon"][..],
            "--queue-timeout soon: not a positive duration",
        ),
        (&["--queue-timeout", "0s"][..], "not a positive duration"),
        (&["--label", ""][..], "--label `` is empty"),
    ]) {
        let err = client.fails(&[&["run", "-d", &fine][..], flags].concat(), 125);
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }

    let parcel = upload(&server, &client, "fine");
    for (extra, needle) in [
        (
            json!({"policy": {"timeout": "0s"}}),
            "policy.timeout must be longer than zero",
        ),
        (
            json!({"policy": {"step_timeout": "forever"}}),
            "policy.step_timeout: invalid duration",
        ),
        (
            json!({"policy": {"backoff": "5s..1s"}}),
            "the initial wait is longer than the max",
        ),
        (json!({"policy": {"max_cost": 0}}), "policy.max_cost 0"),
        (
            json!({"policy": {"max_tokens": 0}}),
            "policy.max_tokens must be greater than zero",
        ),
        (json!({"policy": {"retries": -1}}), "bad run request"),
        (json!({"policy": {"retry": 1}}), "unknown field `retry`"),
        (json!({"policy": {"timeout": 30}}), "invalid type"),
        (
            json!({"idempotency_key": ""}),
            "idempotency_key must not be empty",
        ),
        (json!({"session": ".hidden"}), "invalid session name"),
        (json!({"dedup": "yes"}), "bad run request"),
    ] {
        let mut body = extra.clone();
        body["parcel"] = json!(parcel);
        let (status, answer) = server.call("POST", "/v1/runs", Some(&body));
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("bad_request")),
            "{extra}: {answer}"
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{extra}: {message}");
    }
    assert_eq!(client.ok(&["ps", "-a", "-q"]), "", "no run was created");
}

#[test]
fn a_run_no_worker_may_take_ends_at_its_queue_timeout_from_the_remote_cli() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hello\n");
    // The server's own workers have no labels: nobody may take it.
    let id = client.ok(&[
        "run",
        "-d",
        &hello,
        "--label",
        "gpu",
        "--queue-timeout",
        "300ms",
        "--priority",
        "3",
    ]);
    let out = client.run(&["wait", &id, "--timeout-ms", "20000"]);
    assert!(
        !out.status.success(),
        "a run that never ran did not succeed"
    );
    let run = client.inspect(&id);
    assert_eq!(run["status"], "timed_out", "{run}");
    let reason = run["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("queue timeout: no worker claimed the run within 300ms"),
        "{run}"
    );
    // Without a label, the same flags run it.
    let fine = client.ok(&["run", "-d", &hello, "--queue-timeout", "30s"]);
    client.ok(&["wait", &fine, "--timeout-ms", "20000"]);
}

/// An agent that asks for approval `send-email` and succeeds only when approved.
const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"send-email\",\"summary\":\"Send refund email?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send-email.json\" ]; do sleep 0.02; done\n\
grep -q '\"decision\":\"approve\"' \"$DISPATCH_APPROVALS/send-email.json\"\n";

#[test]
fn approvals_and_dead_letters_work_from_the_remote_cli() {
    let server = Server::start(&[]);
    let client = Client::new(&server);

    // Approve: listed while pending, decided with the local command's line.
    let careful = client.agent("careful", ASKING);
    let id = client.ok(&["run", "-d", &careful]);
    eventually(30, "the approval to be asked for", || {
        client
            .ok(&["approvals", "ls", "--format", "json"])
            .contains("send-email")
    });
    let table = client.ok(&["approvals", "ls"]);
    assert!(
        table.contains("APPROVAL") && table.contains("send-email") && table.contains("pending"),
        "{table}"
    );
    let out = client.run(&["approve", &id[..12], "send-email", "--by", "ada"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("approved `send-email` of run") && stderr.contains("(by ada)"),
        "{stderr}"
    );
    assert_eq!(client.ok(&["wait", &id]), "0");
    assert_eq!(client.ok(&["approvals", "ls", "--format", "json"]), "[]");
    let all: Value =
        serde_json::from_str(&client.ok(&["approvals", "ls", "-a", "--format", "json"]))
            .expect("JSON");
    assert_eq!(all[0]["decision"], "approve", "{all}");
    assert_eq!(all[0]["decided_by"], "ada", "{all}");
    let err = client.fails(&["deny", &id, "send-email"], 125);
    assert!(
        err.contains("already succeeded; there is nothing to deny"),
        "{err}"
    );

    // Dead letters: listed, then replayed under the original policy.
    let failing = client.agent("doomed", "exit 3\n");
    let out = client.run(&["run", &failing, "--retries", "1", "--backoff", "20ms..20ms"]);
    assert_eq!(out.status.code(), Some(3));
    let dead = client.ok(&["ps", "-a", "-q", "--filter", "status=failed"]);
    let letters = || -> Value {
        serde_json::from_str(&client.ok(&["dlq", "ls", "--format", "json"])).expect("JSON")
    };
    eventually(30, "the dead letter", || {
        letters()[0]["run_id"] == dead.as_str()
    });
    let letter = letters()[0].clone();
    assert_eq!(letter["attempts"], 2, "{letter}");
    assert_eq!(letter["parcel_name"], "doomed", "{letter}");
    let table = client.ok(&["dlq", "ls"]);
    assert!(
        table.contains("REPLAYED BY") && table.contains(&dead[..12]),
        "{table}"
    );

    let err = client.fails(&["dlq", "replay", &dead, "--payload", "{bad"], 125);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--payload is not valid JSON"), "{err}");
    let err = client.fails(&["dlq", "replay", &id], 125);
    assert!(err.contains("is not in the dead-letter queue"), "{err}");

    let replayed = client.ok(&["dlq", "replay", &dead]);
    assert_ne!(replayed, dead);
    assert_eq!(client.fails(&["wait", &replayed], 3), "");
    let doc = client.inspect(&replayed);
    assert_eq!(doc["origin_id"], dead.as_str(), "{doc:#}");
    assert_eq!(
        doc["attempts"].as_array().map(Vec::len),
        Some(2),
        "the replay kept --retries 1: {doc:#}"
    );
    eventually(30, "the replay to be noted", || {
        letters().as_array().is_some_and(|all| {
            all.iter()
                .any(|l| l["run_id"] == dead.as_str() && l["replayed_by"] == replayed.as_str())
        })
    });

    // `replay` and `create` work through the server too.
    let err = client.fails(&["replay", &dead], 125);
    assert!(err.contains("--allow-side-effects"), "{err}");
    let again = client.ok(&["replay", &dead, "--allow-side-effects"]);
    assert_eq!(client.inspect(&again)["origin_id"], dead.as_str());
    let created = client.ok(&["create", &failing]);
    assert_eq!(client.inspect(&created)["status"], "created");
}
