//! `dispatch serve --a2a --host`: a service owned by the cluster (two
//! `dispatch server`s, one `dispatch worker`, a fresh PostgreSQL database)
//! answers as an A2A agent at its hook on either server: the card, tasks
//! run by the worker as heartbeat runs, a context's tasks continuing its
//! session, `tasks/get`, and the sessions under `dispatch session --host`.

use crate::remote_common;

use dispatch_test_support::{eventually, http};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

const TOKEN: &str = "a2a-cluster-tok";

/// Counts its turns in the session file; its output says which turn.
const TURNS: &str = "n=$(cat \"$DISPATCH_SESSION_FILE\" 2>/dev/null || echo 0)\n\
    n=$((n+1))\n\
    echo $n > \"$DISPATCH_SESSION_FILE\"\n\
    printf 'turn %s of %s' \"$n\" \"$(cat)\" > \"$DISPATCH_OUTPUT\"\n";

fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp = http::post(url)
        .set("authorization", &format!("Bearer {TOKEN}"))
        .set("content-type", "application/json")
        .send_string(&body.to_string());
    match resp {
        Ok(r) => serde_json::from_str(&r.into_string().expect("a body")).expect("JSON"),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

fn message(text: &str, context: Option<&str>) -> Value {
    let mut m = json!({"message": {"kind": "message", "role": "user", "messageId": "m",
        "parts": [{"kind": "text", "text": text}]}});
    if let Some(c) = context {
        m["message"]["contextId"] = json!(c);
    }
    m
}

#[test]
fn a_cluster_service_answers_a2a_on_every_server_and_keeps_its_contexts_sessions() {
    let Some(db) = postgres() else {
        return;
    };
    let url = db.url().to_string();
    let a = Server::start_on(Some(&url), &["--workers", "0"]);
    let b = Server::start_on(Some(&url), &["--workers", "0"]);
    let _worker = Worker::start(&url, "w1", &["--slots", "2"]);
    let client = Client::new(&a);
    let dir = client.agent_with("turns", TURNS, "LISTEN 127.0.0.1:0\n");
    let id = client.ok(&[
        "serve",
        &dir,
        "--a2a",
        "--name",
        "planner",
        "--listen-shared-secret",
        TOKEN,
    ]);
    assert!(!id.is_empty());

    // The card, on either server, says where to call and how.
    let card_url = format!(
        "http://{}/hooks/planner/.well-known/agent-card.json",
        b.host
    );
    let card: Value = serde_json::from_str(
        &http::get(&card_url)
            .call()
            .expect("the card")
            .into_string()
            .expect("a body"),
    )
    .expect("JSON");
    assert_eq!(card["name"], "turns", "{card}");
    assert_eq!(card["url"], format!("http://{}/hooks/planner", b.host));
    assert_eq!(card["securitySchemes"]["bearer"]["scheme"], "bearer");

    // A task on server a, the next of its context on server b: one session,
    // carried by the store from turn to turn.
    let first = rpc(
        &format!("http://{}/hooks/planner", a.host),
        "message/send",
        message("hello", None),
    );
    let task = &first["result"];
    assert_eq!(task["status"]["state"], "completed", "{first:#}");
    assert_eq!(
        task["artifacts"][0]["parts"][0]["text"],
        "turn 1 of \"hello\""
    );
    let context = task["contextId"].as_str().expect("a context").to_string();
    let second = rpc(
        card["url"].as_str().expect("the card's endpoint"),
        "message/send",
        message("again", Some(&context)),
    );
    assert_eq!(
        second["result"]["artifacts"][0]["parts"][0]["text"], "turn 2 of \"again\"",
        "{second:#}"
    );
    let (_, run) = a.call(
        "GET",
        &format!("/v1/runs/{}", task["id"].as_str().unwrap_or("")),
        None,
    );
    assert_eq!(
        run["parent_id"],
        id.as_str(),
        "the task is a heartbeat of the service: {run}"
    );
    let got = rpc(
        &format!("http://{}/hooks/planner", b.host),
        "tasks/get",
        json!({"id": task["id"]}),
    );
    assert_eq!(got["result"]["contextId"], context.as_str(), "{got}");

    // The context's session is the cluster's.
    let listed = client.ok(&["session", "ls", "--format", "json"]);
    assert!(listed.contains(&format!("turns/a2a-{context}")), "{listed}");

    // A push notification goes only where a completion callback may: not
    // to the servers' loopback (unless --allow-private-callbacks).
    let mut pushed = message("hi", None);
    pushed["configuration"] = json!({"pushNotificationConfig": {"url": "http://127.0.0.1:9/n"}});
    let refused = rpc(
        &format!("http://{}/hooks/planner", a.host),
        "message/send",
        pushed,
    );
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--allow-private-callbacks")),
        "{refused}"
    );

    // No secret, no task.
    let no_token = http::post(&format!("http://{}/hooks/planner", a.host)).send_string(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "x"}})
            .to_string(),
    );
    assert!(
        matches!(no_token, Err(http::Error::Status(401, _))),
        "{no_token:?}"
    );
    client.ok(&["stop", &id]);

    // With --session-ttl, a context's session unused that long goes: the
    // servers sweep it, and the context's next task starts afresh.
    let forgetful = client.ok(&[
        "serve",
        &dir,
        "--a2a",
        "--name",
        "forgetful",
        "--listen-shared-secret",
        TOKEN,
        "--session-ttl",
        "2s",
    ]);
    let hook = format!("http://{}/hooks/forgetful", a.host);
    let first = rpc(&hook, "message/send", message("one", Some("trip")));
    assert_eq!(
        first["result"]["artifacts"][0]["parts"][0]["text"], "turn 1 of \"one\"",
        "{first:#}"
    );
    eventually(30, "the context's session expires", || {
        !client
            .ok(&[
                "session",
                "ls",
                "--prefix",
                "turns/a2a-trip",
                "--format",
                "json",
            ])
            .contains("a2a-trip")
    });
    let doc = client.inspect(&forgetful);
    assert!(
        doc["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "session_expired" && e["data"]["session"] == "turns/a2a-trip"),
        "the service records it: {doc:#}"
    );
    let again = rpc(&hook, "message/send", message("two", Some("trip")));
    assert_eq!(
        again["result"]["artifacts"][0]["parts"][0]["text"], "turn 1 of \"two\"",
        "{again:#}"
    );
    client.ok(&["stop", &forgetful]);
}
