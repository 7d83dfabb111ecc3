//! Policy on triggers and tool calls (issue #37, item 3), through the
//! binary: `dispatch policy test`, a policy in the state directory that
//! denies and modifies runs, and one that denies, holds and approves tool
//! calls by rule, each decision recorded; a broken policy refuses
//! everything (fail closed), and nothing is created or run.

use crate::common;
use crate::native_common;
use crate::remote_common::{Client, Server};

use common::{Dispatch, eventually};
use native_common::{Mock, events_of, refund_agent, text};
use serde_json::{Value, json};

const POLICY: &str = r#"package dispatch

deny contains "hello may not greet bob" if {
    input.action == "create_run"
    input.payload.name == "bob"
}

modify := {"labels": {"tier": "batch"}, "limit_tokens": 5000, "limit_cost_usd": 0.25} if {
    input.action == "create_run"
    input.parcel.name == "hello"
}

auto_approve contains "refunds up to 30 are approved by rule" if {
    input.action == "tool_call"
    input.tool == "refund"
    input.arguments.amount <= 30
}

deny contains "refunds over 90 are never made by an agent" if {
    input.action == "tool_call"
    input.tool == "refund"
    input.arguments.amount > 90
}
"#;

fn with_policy(text: &str) -> Dispatch {
    let d = Dispatch::new();
    std::fs::create_dir_all(d.root()).expect("root");
    std::fs::write(d.root().join("policy.rego"), text).expect("policy");
    d
}

#[test]
fn policy_test_prints_decisions_and_refuses_a_broken_policy() {
    let d = Dispatch::new();
    let file = d.dir.path().join("p.rego");
    std::fs::write(&file, POLICY).expect("policy");
    let p = file.to_str().expect("utf-8");
    let out = d.ok(&[
        "policy",
        "test",
        p,
        "--input",
        r#"{"action":"tool_call","tool":"refund","arguments":{"amount":20}}"#,
    ]);
    assert_eq!(out, "auto_approve: refunds up to 30 are approved by rule");
    let out = d.ok(&[
        "policy",
        "test",
        p,
        "--format",
        "json",
        "--input",
        r#"{"action":"create_run","parcel":{"name":"hello"},"payload":{"name":"bob"}}"#,
    ]);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v,
        json!({"decision": "deny", "reasons": ["hello may not greet bob"]})
    );
    // Bad input: one line each, exit 125.
    let err = d.fails(&["policy", "test", p, "--input", "{nope"], 125);
    assert!(err.contains("is not JSON"), "{err}");
    let err = d.fails(
        &["policy", "test", p, "--input", r#"{"action":"launch"}"#],
        125,
    );
    assert!(err.contains("`launch`"), "{err}");
    let broken = d.dir.path().join("broken.rego");
    std::fs::write(
        &broken,
        "package dispatch\ndeny contains \"x\" if input.toool == 1\n",
    )
    .expect("write");
    let err = d.fails(&["policy", "test", broken.to_str().expect("utf-8")], 125);
    assert!(err.contains("line 2: `input.toool`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_policy_denies_and_modifies_runs_and_a_broken_one_refuses_them_all() {
    let d = with_policy(POLICY);
    let hello = d.agent("hello", "echo hi");
    let dir = hello.to_str().expect("utf-8");
    let err = d.fails(&["run", dir, "--job", r#"{"name":"bob"}"#], 125);
    assert!(
        err.contains("denies this run: hello may not greet bob"),
        "{err}"
    );
    assert_eq!(
        d.ok(&["ps", "-a", "-q"]),
        "",
        "a denied run is never created"
    );

    let id = d.detach(&hello, r#"{"name":"ada"}"#);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let decision = events_of(&doc, "policy")
        .into_iter()
        .next()
        .expect("the decision is an event of the run");
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["action"], "create_run");
    assert_eq!(decision["modify"]["limit_tokens"], 5000);
    assert_eq!(decision["policy_sha256"].as_str().map(str::len), Some(64));

    // A policy that no longer loads opens nothing.
    std::fs::write(
        d.root().join("policy.rego"),
        "package dispatch\ndeny if {\n",
    )
    .expect("write");
    let err = d.fails(&["run", dir, "--job", r#"{"name":"ada"}"#], 125);
    assert!(
        err.contains("policy.rego") && err.contains("no run is created until it loads"),
        "{err}"
    );
    assert_eq!(d.ok(&["ps", "-a", "-q"]).lines().count(), 1);
}

/// The refund agent with a model that calls `refund` with `amount`.
fn refund_run(d: &Dispatch, amount: u64) -> (String, Mock, std::path::PathBuf) {
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "12345", "amount": amount}, "id": "c0"}]},
        text("done", 1, 1),
    ]));
    let (dir, marks) = refund_agent(d.dir.path(), &mock.url(), "");
    let id = d.detach(&dir, r#"{"ticket":"refund please"}"#);
    (id, mock, marks)
}

#[test]
fn a_call_within_an_auto_approve_rule_runs_without_asking_anyone() {
    let d = with_policy(POLICY);

    // 20 ≤ 30: `APPROVAL confirm`, yet nobody is asked.
    let (id, _mock, marks) = refund_run(&d, 20);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let call = events_of(&doc, "tool_call").remove(0);
    assert_eq!(
        call["approval"]["by"],
        "policy rule: refunds up to 30 are approved by rule"
    );
    assert_eq!(call["policy"]["decision"], "auto_approve");
    assert!(
        std::fs::read_to_string(&marks)
            .expect("the tool ran")
            .contains("20")
    );
    let asked: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "-a", "--format", "json"])).expect("json");
    assert_eq!(asked, json!([]), "nobody was asked");
}

#[test]
fn a_denied_tool_call_never_runs_and_the_model_is_told() {
    let d = with_policy(POLICY);
    let (id, mock, marks) = refund_run(&d, 95);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let call = events_of(&doc, "tool_call").remove(0);
    assert_eq!(call["ok"], false, "{call:#}");
    assert_eq!(call["policy"]["decision"], "deny");
    assert!(!marks.exists(), "the tool did not run");
    let told = serde_json::to_string(&mock.requests()[1].body).expect("json");
    assert!(
        told.contains("the policy denies this call: refunds over 90 are never made by an agent"),
        "{told}"
    );
}

#[test]
fn a_call_the_policy_does_not_decide_waits_for_a_person_as_its_tool_says() {
    let d = with_policy(POLICY);
    let (id, _mock, marks) = refund_run(&d, 50);
    eventually(20, "the run pauses for the approval", || {
        d.status(&id) == "paused"
    });
    assert!(!marks.exists());
    d.ok(&["approve", &id, "refund-1", "--by", "ada"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        events_of(&doc, "tool_call").remove(0)["approval"]["by"],
        "ada"
    );
}

#[test]
fn a_servers_policy_decides_its_runs_and_a_broken_change_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, POLICY).expect("policy");
    // Labels route runs: the policy's `tier=batch` needs a worker with it.
    let server = Server::start_with_env(
        None,
        &["--labels", "tier=batch"],
        &[("DISPATCH_POLICY", file.to_str().expect("utf-8"))],
    );
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hi");

    let err = client.fails(&["run", &hello, "--job", r#"{"name":"bob"}"#], 125);
    assert!(err.contains("hello may not greet bob"), "{err}");
    let (status, body) = server.call(
        "POST",
        "/v1/runs/batch",
        Some(&json!({"runs": [{"parcel": "hello", "payload": {"name": "bob"}}]})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");

    let id = client.ok(&["run", &hello, "--detach", "--job", r#"{"name":"ada"}"#]);
    let doc = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    assert_eq!(doc["labels"], json!(["tier=batch"]), "{doc:#}");
    let (_, events) = server.call("GET", &format!("/v1/runs/{id}/events?format=json"), None);
    let decision = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .expect("events")
        .iter()
        .find(|e| e["type"] == "policy")
        .cloned()
        .expect("a policy event");
    assert_eq!(
        decision["data"]["modify"]["limit_tokens"], 5000,
        "{decision:#}"
    );

    // A change that does not load: the last good policy stays in force.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, "package dispatch\ndeny if {\n").expect("write");
    let err = client.fails(&["run", &hello, "--job", r#"{"name":"bob"}"#], 125);
    assert!(err.contains("hello may not greet bob"), "{err}");
    client.ok(&["run", &hello, "--job", r#"{"name":"ada"}"#]);
}
