//! A deadline for runs in review: a run the policy sends to review and
//! nobody decides within the review timeout (`DISPATCH_REVIEW_TIMEOUT`
//! where a local run is created, `dispatch server --review-timeout` on a
//! cluster) ends `cancelled`, never having run, with a reason naming the
//! deadline, its review denied by the deadline, a `state` event, and a
//! `review.expired` notification for the approvers. Locally (whoever reads
//! the run ends it) and on a real server on SQLite (its timers end it).
//! Waits are bounded polls, never timed assertions.

use crate::common::{Dispatch, eventually};
use crate::native_common::events_of;
use crate::remote_common::{Client, Server};
use dispatch_test_support::receiver::HttpReceiver;
use serde_json::{Value, json};

const POLICY: &str = r#"package dispatch

review contains "deploys need a person" if {
    input.action == "create_run"
    input.parcel.name == "deploy"
}
"#;

/// Checks the end of a run whose review ran out: its state, its events and
/// its approval (`doc` is `inspect-run --format json`'s).
fn ended_by_the_deadline(doc: &Value, within: &str) {
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert_eq!(
        reason,
        format!(
            "cancelled before it started: review deadline passed: nobody decided within {within} (review timeout)"
        ),
        "{doc:#}"
    );
    assert_eq!(
        doc["state"]["started_at"],
        Value::Null,
        "never ran: {doc:#}"
    );
    let ended = events_of(doc, "state")
        .into_iter()
        .find(|s| s["from"] == "review")
        .expect("the state event out of review");
    assert_eq!(ended["to"], "cancelled", "{ended:#}");
    assert_eq!(ended["by"], "dispatch (review deadline)", "{ended:#}");
    let decided = events_of(doc, "approval_decided").remove(0);
    assert_eq!(
        (&decided["id"], &decided["decision"], &decided["by"]),
        (
            &json!("policy-review"),
            &json!("deny"),
            &json!("dispatch (review deadline)")
        ),
        "{decided:#}"
    );
}

#[test]
fn a_local_run_in_review_nobody_decides_is_cancelled_at_its_deadline() {
    let d = Dispatch::with_env(&[("DISPATCH_REVIEW_TIMEOUT", "1s")]);
    std::fs::create_dir_all(d.root()).expect("root");
    std::fs::write(d.root().join("policy.rego"), POLICY).expect("policy");
    let deploy = d.agent("deploy", "echo deployed\n");
    let deploy = deploy.to_str().expect("utf-8");
    let id = d.ok(&["run", deploy, "--detach"]);
    let approvals: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("json");
    let asked = &approvals[0];
    assert_eq!(asked["id"], "policy-review", "{approvals:#}");
    assert_eq!(
        asked["deadline"]
            .as_i64()
            .zip(asked["requested_at"].as_i64())
            .map(|(d, r)| d - r),
        Some(1000),
        "the review's deadline is its timeout after creation: {approvals:#}"
    );

    // `wait` reads the run until the deadline has ended it.
    let out = d.run(&["wait", &id, "--timeout-ms", "30000"]);
    assert_ne!(out.status.code(), Some(124), "{out:?}");
    ended_by_the_deadline(&d.inspect(&id), "1.0s");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("cancelled"), "{ps}");

    let outbox: Value =
        serde_json::from_str(&d.ok(&["notify", "ls", "--format", "json"])).expect("json");
    let note = outbox
        .as_array()
        .and_then(|l| l.iter().find(|n| n["kind"] == "review.expired"))
        .unwrap_or_else(|| panic!("a review.expired notification: {outbox:#}"));
    assert_eq!(note["run_id"], id.as_str());
    assert!(
        note["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("review deadline passed")),
        "{note:#}"
    );

    // A bad timeout is one line, and nothing is created.
    let bad = Dispatch::with_env(&[("DISPATCH_REVIEW_TIMEOUT", "soon")]);
    std::fs::create_dir_all(bad.root()).expect("root");
    std::fs::write(bad.root().join("policy.rego"), POLICY).expect("policy");
    let deploy = bad.agent("deploy", "echo deployed\n");
    let err = bad.fails(&["run", deploy.to_str().expect("utf-8"), "--detach"], 125);
    assert!(
        err.contains("DISPATCH_REVIEW_TIMEOUT `soon` is not a duration"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_person_who_decides_in_time_wins_over_the_deadline() {
    let d = Dispatch::with_env(&[("DISPATCH_REVIEW_TIMEOUT", "1h")]);
    std::fs::create_dir_all(d.root()).expect("root");
    std::fs::write(d.root().join("policy.rego"), POLICY).expect("policy");
    let deploy = d.agent("deploy", "echo deployed\n");
    let id = d.ok(&["run", deploy.to_str().expect("utf-8"), "--detach"]);
    assert_eq!(d.status(&id), "review");
    d.ok(&["approve", &id, "--by", "ada"]);
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
}

#[test]
fn on_a_server_the_review_timeout_cancels_a_run_nobody_decided() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, POLICY).expect("policy");
    let hooks = HttpReceiver::start().expect("http");
    let conf = dir.path().join("notifications.toml");
    std::fs::write(
        &conf,
        format!(
            "[channels.ops]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec-test\"\n\n\
             [approvals]\nnotify = [\"ops\"]\n\n[delivery]\npoll = \"50ms\"\nbackoff = \"100ms\"\n",
            hooks.url("/ops")
        ),
    )
    .expect("config");
    let server = Server::start_with_env(
        None,
        &["--review-timeout", "1s"],
        &[
            ("DISPATCH_POLICY", file.to_str().expect("utf-8")),
            ("DISPATCH_NOTIFICATIONS", conf.to_str().expect("utf-8")),
        ],
    );
    let client = Client::new(&server);
    let deploy = client.agent("deploy", "echo deployed\n");
    let id = client.ok(&["run", &deploy, "--detach"]);
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] != "review");
    assert_eq!(run["status"], "cancelled", "{run:#}");
    ended_by_the_deadline(&client.inspect(&id), "1.0s");
    // The approvers hear of it: the server delivers `review.expired`.
    let expired = || {
        hooks
            .posted_to("/ops")
            .into_iter()
            .map(|p| p.json())
            .find(|doc| doc["event"] == "review.expired")
    };
    eventually(30, "the review.expired message", || expired().is_some());
    let doc = expired().expect("posted");
    assert_eq!(doc["run"]["id"], id.as_str(), "{doc:#}");
    assert!(
        doc["reason"]
            .as_str()
            .is_some_and(|r| r.contains("review deadline passed")),
        "{doc:#}"
    );
    let listed = client.ok(&["notify", "ls", "--format", "json"]);
    assert!(listed.contains("review.expired"), "{listed}");
}

#[test]
fn a_bad_review_timeout_keeps_the_server_from_starting() {
    let d = Dispatch::new();
    let err = d.fails(&["server", "--review-timeout", "tomorrow"], 125);
    assert!(
        err.contains("--review-timeout `tomorrow` is not a duration (hint: like 30m, 24h or 7d)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
