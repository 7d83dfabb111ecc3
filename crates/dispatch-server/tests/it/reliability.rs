//! Approvals and dead letters over real HTTP on an ephemeral loopback port,
//! on SQLite and on PostgreSQL (a fresh database per test).

use crate::common;

use common::{Db, TestServer};
use serde_json::{Value, json};

/// Expands each test for both databases.
macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    if let Some(server) = super::TestServer::start(super::Db::Sqlite, 2) {
                        super::$name(server);
                    }
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(server) = super::TestServer::start(super::Db::Postgres, 2) {
                        super::$name(server);
                    }
                }
            )+
        }
    };
}

on_both!(
    an_approval_decided_through_the_api_resumes_the_run,
    a_dead_lettered_run_is_listed_and_replayed_as_a_linked_run,
    a_replayed_dead_letter_keeps_the_policy_it_was_sent_with,
);

/// An agent that asks for approval `send-email`, waits for the decision file
/// and succeeds only when approved.
const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"send-email\",\"summary\":\"Send refund email?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send-email.json\" ]; do sleep 0.02; done\n\
cat \"$DISPATCH_APPROVALS/send-email.json\"; echo\n\
grep -q '\"decision\":\"approve\"' \"$DISPATCH_APPROVALS/send-email.json\"\n";

fn approvals(body: &Value) -> &[Value] {
    body["approvals"].as_array().map_or(&[], Vec::as_slice)
}

fn an_approval_decided_through_the_api_resumes_the_run(server: TestServer) {
    let parcel = server.upload(&[
        (
            "Agentfile",
            "NAME careful\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", ASKING),
    ]);
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("an id").to_string();

    // The request shows up as pending, and the run pauses on it.
    let pending = server.wait_for(&format!("/v1/approvals?run={id}"), |b| {
        !approvals(b).is_empty()
    });
    assert_eq!(approvals(&pending)[0]["id"], "send-email", "{pending}");
    assert_eq!(approvals(&pending)[0]["summary"], "Send refund email?");
    assert!(approvals(&pending)[0]["decision"].is_null(), "{pending}");
    let (_, all_pending) = server.get("/v1/approvals");
    assert!(
        approvals(&all_pending)
            .iter()
            .any(|a| a["run_id"] == id.as_str()),
        "pending is the default: {all_pending}"
    );
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "paused");

    // Malformed decisions are refused and decide nothing.
    let path = format!("/v1/runs/{id}/approvals/send-email");
    let (status, body) = server.post(&path, &json!({"decision": "maybe", "by": "ada"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.post_raw(&path, "not json");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.post(&path, &json!({"decision": "approve"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.post(
        &format!("/v1/runs/{id}/approvals/no-such-approval"),
        &json!({"decision": "approve", "by": "ada"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("approval_not_found")),
        "{body}"
    );

    // Approve: recorded, the agent reads it, the run resumes and succeeds.
    let (status, decided) = server.post(
        &path,
        &json!({"decision": "approve", "by": "ada", "rationale": "refund is due"}),
    );
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["decision"], "approve");
    assert_eq!(decided["decided_by"], "ada");
    assert_eq!(decided["rationale"], "refund is due");

    // The first decision stands.
    let (status, body) = server.post(&path, &json!({"decision": "deny", "by": "bob"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_decided")),
        "{body}"
    );

    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        matches!(
            r["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled" | "timed_out")
        )
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, log) = server.text(&format!("/v1/runs/{id}/logs"), &[]);
    assert!(
        log.contains("\"by\":\"ada\""),
        "the agent read the decision: {log}"
    );

    // Still 409 once the run has finished.
    let (status, body) = server.post(&path, &json!({"decision": "deny", "by": "bob"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_decided")),
        "{body}"
    );

    let (status, none) = server.get(&format!("/v1/approvals?pending=true&run={id}"));
    assert_eq!(status, 200);
    assert!(approvals(&none).is_empty(), "{none}");
    let (_, all) = server.get(&format!("/v1/approvals?pending=false&run={id}"));
    assert_eq!(approvals(&all).len(), 1, "{all}");
    assert_eq!(approvals(&all)[0]["decision"], "approve");
    assert_eq!(approvals(&all)[0]["decided_by"], "ada");
    let (status, body) = server.get("/v1/approvals?pending=perhaps");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
}

fn letters(body: &Value) -> &[Value] {
    body["dead_letters"].as_array().map_or(&[], Vec::as_slice)
}

fn a_dead_lettered_run_is_listed_and_replayed_as_a_linked_run(server: TestServer) {
    let parcel = server.upload(&[
        (
            "Agentfile",
            "NAME doomed\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", "echo doomed\nexit 3\n"),
    ]);
    let (status, run) = server.post(
        "/v1/runs?wait=true&timeout=30",
        &json!({"parcel": parcel, "payload": {"x": 1}}),
    );
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    let id = run["id"].as_str().expect("an id").to_string();

    let listed = server.wait_for("/v1/dead-letters", |b| {
        letters(b).iter().any(|l| l["run_id"] == id.as_str())
    });
    let letter = letters(&listed)
        .iter()
        .find(|l| l["run_id"] == id.as_str())
        .expect("the dead letter");
    assert_eq!(letter["parcel_name"], "doomed", "{letter}");
    assert_eq!(letter["input"], json!({"x": 1}));
    assert_eq!(letter["attempts"], 1, "no retries: {letter}");
    assert!(letter["replayed_by"].is_null(), "{letter}");

    // Bad bodies and runs that are not dead letters are refused.
    let replay = format!("/v1/dead-letters/{id}/replay");
    let (status, body) = server.post_raw(&replay, "{\"payload\":");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.post(&replay, &json!({"other": 1}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let noop = server.noop_parcel();
    let (_, fine) = server.post("/v1/runs?wait=true&timeout=30", &json!({"parcel": noop}));
    let fine = fine["id"].as_str().expect("an id");
    let (status, body) = server.post(&format!("/v1/dead-letters/{fine}/replay"), &json!({}));
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("dead_letter_not_found")),
        "{body}"
    );

    // Replay with a new payload: a new queued run linked to the old one.
    let (status, new) = server.post(&replay, &json!({"payload": {"x": 2}}));
    assert_eq!(status, 201, "{new}");
    let new_id = new["id"].as_str().expect("an id").to_string();
    assert_ne!(new_id, id);
    assert_eq!(new["origin_id"], id.as_str(), "{new}");
    assert_eq!(new["payload"], json!({"x": 2}));
    assert_eq!(new["parcel_name"], "doomed");

    // The workers run it (it fails again, and is dead-lettered in turn).
    let ended = server.wait_for(&format!("/v1/runs/{new_id}"), |r| r["status"] == "failed");
    assert_eq!(ended["origin_id"], id.as_str());
    let listed = server.wait_for("/v1/dead-letters", |b| {
        letters(b).iter().any(|l| l["run_id"] == new_id.as_str())
    });
    let old = letters(&listed)
        .iter()
        .find(|l| l["run_id"] == id.as_str())
        .expect("the first dead letter");
    assert_eq!(old["replayed_by"], new_id.as_str(), "{listed}");

    // Without a body, the replay keeps the original input.
    let (status, again) = server.post_raw(&replay, "");
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["payload"], json!({"x": 1}));
    assert_eq!(again["origin_id"], id.as_str());
}

fn a_replayed_dead_letter_keeps_the_policy_it_was_sent_with(server: TestServer) {
    let parcel = server.upload(&[
        (
            "Agentfile",
            "NAME flaky\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", "exit 3\n"),
    ]);
    let body = json!({"parcel": parcel, "policy": {"retries": 1, "backoff": "10ms..10ms"}});
    let (status, run) = server.post("/v1/runs?wait=true&timeout=30", &body);
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        (run["status"].as_str(), run["attempt"].as_u64()),
        (Some("failed"), Some(2)),
        "the workers retried once: {run}"
    );
    let id = run["id"].as_str().expect("an id").to_string();
    server.wait_for("/v1/dead-letters", |b| {
        letters(b).iter().any(|l| l["run_id"] == id.as_str())
    });
    let (status, new) = server.post(&format!("/v1/dead-letters/{id}/replay"), &json!({}));
    assert_eq!(status, 201, "{new}");
    let new_id = new["id"].as_str().expect("an id").to_string();
    let ended = server.wait_for(&format!("/v1/runs/{new_id}"), |r| r["status"] == "failed");
    assert_eq!(ended["attempt"], 2, "the replay retried once too: {ended}");
    let (_, attempts) = server.get(&format!("/v1/runs/{new_id}/attempts"));
    assert_eq!(attempts["attempts"].as_array().map(Vec::len), Some(2));
}
