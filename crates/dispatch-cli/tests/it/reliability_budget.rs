//! Promise 7: token and cost budgets.

use crate::common;

use common::Dispatch;

const SPEND: &str = "echo '{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":500,\"output_tokens\":100,\"cost_usd\":0.01}' >> \"$DISPATCH_EVENTS\"\n";

#[test]
fn crossing_a_hard_token_limit_stops_the_run_with_budget_exceeded_and_no_retry() {
    let d = Dispatch::new();
    let agent = d.agent("spender", &format!("{SPEND}{SPEND}sleep 30\n"));
    let out = d.run(&[
        "run",
        agent.to_str().expect("utf-8"),
        "--max-tokens",
        "1000",
        "--retries",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("reason: budget_exceeded: 1200 tokens used, limit 1000"),
        "the final summary says why: {stderr}"
    );
    let id = d.ok(&["ps", "-a", "-q"]);
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["attempt"], 1, "a budget stop is not retried");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("budget_exceeded"), "{ps}");
}

#[test]
fn a_cost_limit_from_the_agentfile_stops_the_run() {
    let d = Dispatch::new();
    let agent = d.agent_with(
        "costly",
        &format!("{SPEND}{SPEND}{SPEND}sleep 30\n"),
        "LIMIT COST 0.025\n",
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("budget_exceeded: cost $0.0300"),
        "{reason}"
    );
}

#[test]
fn a_soft_limit_records_one_warning_and_the_run_goes_on() {
    let d = Dispatch::new();
    let agent = d.agent_with(
        "soft",
        &format!("{SPEND}{SPEND}{SPEND}"),
        "LIMIT TOKENS 1000 SOFT\n",
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded");
    let warnings: Vec<_> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0]["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("soft token limit")),
        "{warnings:#?}"
    );
}
