use std::path::Path;

use serde_json::json;

use super::*;

const POLICY: &str = r#"package dispatch

# Production deploys need the `approved` label; nobody runs `forbidden`.
deny contains "forbidden is retired" if input.parcel.name == "forbidden"

review contains "deploys are reviewed before they start" if {
    input.action == "create_run"
    input.parcel.name == "deploy"
}

modify := {"labels": {"tier": "batch"}, "limit_cost_usd": 0.5} if {
    input.action == "create_run"
    input.trigger == "schedule"
}

deny contains sprintf("%s may not run shell", [input.who.name]) if {
    input.action == "tool_call"
    input.tool == "shell"
}

require_approval contains "high-risk tools need a person" if {
    input.action == "tool_call"
    input.risk == "high"
}

auto_approve contains "refunds up to 20 are approved by rule" if {
    input.action == "tool_call"
    input.tool == "refund"
    input.arguments.amount <= 20
}
"#;

fn policy() -> Policy {
    Policy::from_text(Path::new("policy.rego"), POLICY).expect("the policy loads")
}

fn run(parcel: &str, trigger: &str) -> serde_json::Value {
    let mut v = input::sample_run();
    v["parcel"]["name"] = json!(parcel);
    v["trigger"] = json!(trigger);
    v
}

fn tool(name: &str, args: serde_json::Value, risk: Option<&str>) -> serde_json::Value {
    let mut v = input::sample_tool_call();
    v["tool"] = json!(name);
    v["arguments"] = args;
    v["risk"] = json!(risk);
    v["who"]["name"] = json!("ada");
    v
}

#[test]
fn runs_are_allowed_denied_reviewed_and_modified() {
    let p = policy();
    assert_eq!(
        p.decide_run(&run("hello", "manual")).expect("decides"),
        RunDecision::Allow { modify: None }
    );
    assert_eq!(
        p.decide_run(&run("forbidden", "manual")).expect("decides"),
        RunDecision::Deny {
            reasons: vec!["forbidden is retired".into()]
        }
    );
    assert!(matches!(
        p.decide_run(&run("deploy", "manual")).expect("decides"),
        RunDecision::Review { .. }
    ));
    let RunDecision::Allow { modify: Some(m) } =
        p.decide_run(&run("hello", "schedule")).expect("decides")
    else {
        panic!("a scheduled run is modified")
    };
    assert_eq!(m.labels.get("tier").map(String::as_str), Some("batch"));
    assert_eq!(m.limit_cost_usd, Some(0.5));
}

#[test]
fn tool_calls_are_allowed_denied_held_and_approved_by_rule() {
    let p = policy();
    assert_eq!(
        p.decide_tool(&tool("lookup", json!({}), None))
            .expect("decides"),
        ToolDecision::Allow
    );
    assert_eq!(
        p.decide_tool(&tool("shell", json!({}), None))
            .expect("decides"),
        ToolDecision::Deny {
            reasons: vec!["ada may not run shell".into()]
        }
    );
    assert!(matches!(
        p.decide_tool(&tool("refund", json!({"amount": 500}), Some("high")))
            .expect("decides"),
        ToolDecision::RequireApproval { .. }
    ));
    assert_eq!(
        p.decide_tool(&tool("refund", json!({"amount": 20}), None))
            .expect("decides"),
        ToolDecision::AutoApprove {
            rules: vec!["refunds up to 20 are approved by rule".into()]
        }
    );
    assert_eq!(
        p.decide_tool(&tool("refund", json!({"amount": 21}), None))
            .expect("decides"),
        ToolDecision::Allow
    );
}

#[test]
fn a_broken_policy_is_refused_at_load_with_what_is_wrong() {
    let load = |text: &str| {
        Policy::from_text(Path::new("p.rego"), text)
            .expect_err("an error")
            .to_string()
    };
    let e = load("package dispatch\ndeny contains \"x\" if {\n");
    assert!(e.starts_with("policy p.rego:"), "{e}");
    let e = load("package other\ndeny contains \"x\" if input.tool == \"a\"\n");
    assert!(
        e.contains("`package other`") && e.contains("package dispatch"),
        "{e}"
    );
    let e = load("package dispatch\ndeny contains \"x\" if input.toool == \"a\"\n");
    assert!(e.contains("line 2: `input.toool`"), "{e}");
    let e = load("package dispatch\nmodify := {\"colour\": \"red\"}\n");
    assert!(
        e.contains("trial create_run") && e.contains("colour"),
        "{e}"
    );
    let e = Policy::load(Path::new("/nonexistent/p.rego"))
        .expect_err("an error")
        .to_string();
    assert!(e.contains("cannot read it"), "{e}");
}

#[test]
fn a_policy_without_rules_allows_and_a_bad_action_is_an_error() {
    let p = Policy::from_text(Path::new("p.rego"), "package dispatch\n").expect("decides");
    assert_eq!(
        p.decide(&input::sample_run()).expect("decides"),
        Decision::Run(RunDecision::Allow { modify: None })
    );
    let e = p
        .decide(&json!({"action": "launch"}))
        .expect_err("an error")
        .to_string();
    assert!(e.contains("`launch`") && e.contains("denied"), "{e}");
}

#[test]
fn reused_answers_are_the_answers_of_what_the_policy_reads() {
    let p = Policy::from_text(
        Path::new("policy.rego"),
        "package dispatch\ndeny contains \"big\" if input.payload.n > 10\n",
    )
    .expect("loads");
    let mut small = input::sample_run();
    small["payload"] = json!({"n": 1});
    let mut big = small.clone();
    big["payload"] = json!({"n": 11});
    for _ in 0..3 {
        assert!(matches!(
            p.decide_run(&small),
            Ok(RunDecision::Allow { .. })
        ));
        assert!(matches!(p.decide_run(&big), Ok(RunDecision::Deny { .. })));
    }
    // One that does not read the payload answers alike for both, each time.
    let q = policy();
    let mut forbidden = run("forbidden", "manual");
    forbidden["payload"] = json!({"n": 1});
    let first = format!("{:?}", q.decide_run(&forbidden));
    forbidden["payload"] = json!({"n": 2});
    assert_eq!(format!("{:?}", q.decide_run(&forbidden)), first);
    assert!(first.contains("forbidden is retired"), "{first}");
}
