//! A native agent's tool approval is a durable wait: the round's undecided
//! call suspends the run (`paused`, state `suspended`, no process of the
//! run left), `dispatch approve|deny` wakes it, and the next attempt runs
//! the approved call (or tells the model of the denial) without calling
//! the model again and without running again the calls of that round that
//! completed before the suspension.

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};

use common::{Dispatch, eventually, processes_of};
use native_common::{Mock, events_of, message_texts, native_agent, text};
use serde_json::{Value, json};

/// An agent with `lookup` (no approval) and `refund` (confirm); each
/// appends its arguments to its own marks file. Returns the agent's dir.
fn agent(d: &Dispatch, mock: &Mock) -> PathBuf {
    let dir = native_agent(
        d.dir.path(),
        "support",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL lookup.sh\nTOOL LOCAL refund.sh APPROVAL confirm RISK high",
            mock.url()
        ),
    );
    for tool in ["lookup", "refund"] {
        let marks = d.dir.path().join(format!("{tool}.marks"));
        std::fs::write(
            dir.join(format!("{tool}.sh")),
            format!(
                "cat >> '{}'\necho >> '{}'\necho {tool}-done\n",
                marks.display(),
                marks.display()
            ),
        )
        .expect("tool");
    }
    dir
}

fn marks(d: &Dispatch, tool: &str) -> Vec<String> {
    std::fs::read_to_string(d.dir.path().join(format!("{tool}.marks")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The approval the suspended run waits for, once it is suspended with
/// no process left.
fn suspended_on(d: &Dispatch, id: &str) -> String {
    eventually(20, "the run suspends for an approval", || {
        d.inspect(id)["state"]["status"] == "suspended"
    });
    let doc = d.inspect(id);
    assert_eq!(doc["status"], "paused", "{doc:#}");
    assert_eq!(doc["state"]["wait"]["for"], "approval", "{doc:#}");
    eventually(10, "no process of the run is left", || {
        processes_of(id).is_empty()
    });
    doc["state"]["wait"]["name"]
        .as_str()
        .expect("the approval's id")
        .to_string()
}

fn run_of(d: &Dispatch, dir: &Path) -> String {
    d.detach(dir, r#"{"ticket":"refund please"}"#)
}

#[test]
fn an_approval_suspends_the_run_and_approve_resumes_it_without_repeating_calls() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "lookup", "arguments": {"order": "12345"}, "id": "c0"},
            {"name": "refund", "arguments": {"order": "12345", "amount": 40}, "id": "c1"},
        ]},
        text("refunded order 12345", 1, 1),
    ]));
    let dir = agent(&d, &mock);
    let id = run_of(&d, &dir);
    let approval = suspended_on(&d, &id);
    assert_eq!(approval, "refund-1");
    assert_eq!(marks(&d, "lookup").len(), 1, "the other call completed");
    assert!(
        marks(&d, "refund").is_empty(),
        "nothing ran before the decision"
    );
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("waiting for approval `refund-1`"), "{ps}");
    let pending: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("json");
    assert_eq!(pending[0]["details"]["tool"], "refund", "{pending}");

    d.ok(&["approve", &id, "refund-1", "--by", "ana"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["attempt"], 2, "the wake is the next attempt");
    assert_eq!(
        marks(&d, "lookup").len(),
        1,
        "the completed call is not run again"
    );
    assert_eq!(marks(&d, "refund").len(), 1, "the approved call ran once");
    let reqs = mock.requests();
    assert_eq!(
        reqs.len(),
        2,
        "the suspended round's model call is not repeated"
    );
    let told = message_texts(&reqs[1].body);
    assert!(
        told.iter().any(|t| t.contains("lookup-done"))
            && told.iter().any(|t| t.contains("refund-done")),
        "the model gets both results: {told:?}"
    );
    let calls = events_of(&doc, "tool_call");
    assert_eq!(calls.len(), 2, "one event per call: {calls:#?}");
    let refund = calls
        .iter()
        .find(|c| c["name"] == "refund")
        .expect("refund");
    assert_eq!(refund["approval"]["decision"], "approve");
    assert_eq!(refund["approval"]["by"], "ana");
    let pending: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("json");
    assert_eq!(pending, json!([]), "asked once");
}

#[test]
fn deny_wakes_the_run_and_the_model_is_told() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "refund", "arguments": {"order": "7", "amount": 90}, "id": "c0"},
        ]},
        text("could not refund", 1, 1),
    ]));
    let dir = agent(&d, &mock);
    let id = run_of(&d, &dir);
    let approval = suspended_on(&d, &id);
    d.ok(&[
        "deny",
        &id,
        &approval,
        "--by",
        "ana",
        "--rationale",
        "too much",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert!(marks(&d, "refund").is_empty(), "a denied call never runs");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        message_texts(&reqs[1].body)
            .iter()
            .any(|t| t.contains("denied by ana: too much")),
        "the model is told"
    );
}

#[test]
fn two_approvals_of_one_round_suspend_in_turn_and_each_call_runs_once() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "refund", "arguments": {"order": "1", "amount": 10}, "id": "c0"},
            {"name": "refund", "arguments": {"order": "2", "amount": 20}, "id": "c1"},
            {"name": "lookup", "arguments": {"order": "3"}, "id": "c2"},
        ]},
        text("both refunded", 1, 1),
    ]));
    let dir = agent(&d, &mock);
    let id = run_of(&d, &dir);
    let first = suspended_on(&d, &id);
    let listed: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    d.ok(&["approve", &id, &first]);
    // The next attempt runs the approved call and suspends on the other.
    eventually(20, "the run suspends on the second approval", || {
        let doc = d.inspect(&id);
        doc["state"]["status"] == "suspended" && doc["state"]["wait"]["name"] != first.as_str()
    });
    let second = suspended_on(&d, &id);
    assert_eq!(marks(&d, "refund").len(), 1, "{:?}", marks(&d, "refund"));
    d.ok(&["approve", &id, &second]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(marks(&d, "refund").len(), 2, "each approved call ran once");
    assert_eq!(marks(&d, "lookup").len(), 1, "the free call ran once");
    assert_eq!(mock.requests().len(), 2, "one model call per round");
    assert_eq!(events_of(&doc, "tool_call").len(), 3);
}
