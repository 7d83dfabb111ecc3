//! Promise 8: approvals pause a run until someone (or the timeout) decides.

use crate::common;

use common::{Dispatch, eventually};
use serde_json::Value;

fn asking(timeout_s: u64) -> String {
    format!(
        "echo '{{\"type\":\"approval\",\"id\":\"send-email\",\"summary\":\"Send refund email?\",\"timeout_s\":{timeout_s}}}' >> \"$DISPATCH_EVENTS\"\n\
         while [ ! -e \"$DISPATCH_APPROVALS/send-email.json\" ]; do sleep 0.02; done\n\
         cat \"$DISPATCH_APPROVALS/send-email.json\"; echo\n\
         grep -q '\"decision\":\"approve\"' \"$DISPATCH_APPROVALS/send-email.json\"\n"
    )
}

#[test]
fn an_approval_pauses_the_run_and_a_decision_resumes_it_on_the_record() {
    let d = Dispatch::new();
    let agent = d.agent("careful", &asking(3600));
    let id = d.detach(&agent, "{}");
    eventually(10, "the run is paused", || d.status(&id) == "paused");
    let ps = d.ok(&["ps"]);
    assert!(
        ps.contains("paused: approval `send-email`: Send refund email?"),
        "{ps}"
    );
    let pending: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("JSON");
    assert_eq!(pending[0]["id"], "send-email");
    assert_eq!(pending[0]["run_id"], id.as_str());
    d.ok(&[
        "approve",
        &id[..8],
        "send-email",
        "--by",
        "ada",
        "--rationale",
        "customer verified",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let log = d.ok(&["logs", &id]);
    assert!(
        log.contains(r#""by":"ada""#),
        "the agent read the decision: {log}"
    );
    let all: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "-a", "--format", "json"])).expect("JSON");
    assert_eq!(all[0]["decision"], "approve");
    assert_eq!(all[0]["decided_by"], "ada");
    assert_eq!(all[0]["rationale"], "customer verified");
    let decided = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "approval_decided")
        .expect("the decision is an event");
    assert_eq!(decided["data"]["by"], "ada");
    assert_eq!(
        doc["approvals"][0]["decided_by"], "ada",
        "inspect-run has it too"
    );
    let human = d.ok(&["inspect-run", &id]);
    assert!(
        human.contains("send-email (Send refund email?) approve by ada: customer verified"),
        "{human}"
    );
    let err = d.fails(&["deny", &id, "send-email"], 125);
    assert!(err.contains("already"), "{err}");
}

#[test]
fn an_approval_timeout_denies_and_paused_time_does_not_count_against_the_run_timeout() {
    let d = Dispatch::new();
    // The agent exits 0 on any decision, so the run's status shows whether
    // the 1.5 s run timeout counted the 2 s spent paused.
    let script = asking(2).replace("grep -q", "true || grep -q");
    let agent = d.agent("impatient", &script);
    let id = d.ok(&[
        "run",
        agent.to_str().expect("utf-8"),
        "--detach",
        "--timeout",
        "1500ms",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let all: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "-a", "--format", "json"])).expect("JSON");
    assert_eq!(all[0]["decision"], "deny");
    assert_eq!(all[0]["decided_by"], "dispatch");
    let log = d.ok(&["logs", &id]);
    assert!(log.contains(r#""decision":"deny""#), "{log}");
}
