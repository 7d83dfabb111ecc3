//! The Python SDK (`sdk/python`) drives the real runtime: `examples/py-agent`
//! records usage, steps, tool calls, a checkpoint, an artifact and its output,
//! resumes from its checkpoint, and waits for an approval.

use crate::common;

use common::{Dispatch, eventually};
use serde_json::{Value, json};

fn example() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/py-agent")
}

fn sdk() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/python")
}

/// `dispatch run examples/py-agent --detach --job <payload> <extra>` with the
/// SDK on PYTHONPATH; returns the run's id.
fn start(d: &Dispatch, payload: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", example(), "--detach", "--job", payload];
    args.extend_from_slice(extra);
    let out = d
        .command()
        .env("PYTHONPATH", sdk())
        .args(&args)
        .output()
        .expect("run dispatch");
    common::checks::ok(&args, &out)
}

fn events<'a>(doc: &'a Value, kind: &str) -> Vec<&'a Value> {
    doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[test]
fn the_python_example_records_usage_steps_tools_checkpoint_artifact_and_output() {
    let d = Dispatch::new();
    let id = start(&d, r#"{"topic":"rust"}"#, &[]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert!(events(&doc, "warning").is_empty(), "{doc:#}");
    assert_eq!(
        doc["output"],
        json!({"topic": "rust", "facts": 2, "attempt": 1})
    );
    assert_eq!(doc["usage"]["input_tokens"], 600);
    assert_eq!(doc["usage"]["output_tokens"], 180);
    assert!((doc["usage"]["cost_usd"].as_f64().expect("cost") - 0.003).abs() < 1e-9);
    let steps: Vec<&str> = doc["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(steps, ["research", "write"]);
    let tool = &doc["tool_calls"][0];
    assert_eq!(tool["name"], "search");
    assert_eq!(tool["ok"], true);
    assert!(tool["duration_ms"].as_i64().is_some(), "{tool}");
    let call = &events(&doc, "tool_call")[0]["data"];
    assert_eq!(call["input"], json!({"query": "rust"}));
    assert_eq!(call["output"][0], "Rust has no garbage collector.");
    let checkpoint = &events(&doc, "checkpoint")[0]["data"];
    assert_eq!(checkpoint["step"], "research");
    assert_eq!(
        checkpoint["state"]["facts"].as_array().map(Vec::len),
        Some(2)
    );
    let art = &doc["artifacts"][0];
    assert_eq!(art["name"], "summary.md");
    let stored = d
        .root()
        .join("artifacts")
        .join(art["sha256"].as_str().expect("sha"));
    let text = std::fs::read_to_string(stored).expect("artifact stored");
    assert!(text.starts_with("# rust\n\n- Rust has no"), "{text}");
    let log = d.ok(&["logs", &id]);
    assert!(
        log.contains(&format!("py-agent: run {id}, attempt 1")),
        "{log}"
    );
}

#[test]
fn a_python_retry_resumes_from_the_sdk_checkpoint() {
    let d = Dispatch::new();
    let id = start(
        &d,
        r#"{"topic":"python","fail_first":true}"#,
        &["--backoff", "10ms..10ms"],
    );
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["attempt"], 2);
    assert_eq!(
        doc["tool_calls"].as_array().map(Vec::len),
        Some(1),
        "attempt 2 does not search again: {doc:#}"
    );
    let failure = events(&doc, "error");
    assert_eq!(
        failure[0]["data"]["message"],
        "the first attempt fails on purpose"
    );
    assert_eq!(failure[0]["attempt"], 1);
    let log = d.ok(&["logs", &id]);
    assert!(log.contains("resuming from the checkpoint"), "{log}");
}

#[test]
fn a_python_approval_waits_for_dispatch_approve() {
    let d = Dispatch::new();
    let id = start(&d, r#"{"topic":"rust","ask":true}"#, &[]);
    eventually(20, "the run is paused", || d.status(&id) == "paused");
    let ps = d.ok(&["ps"]);
    assert!(
        ps.contains("paused: approval `publish`: Publish the summary of rust?"),
        "{ps}"
    );
    d.ok(&["approve", &id, "publish", "--by", "ada"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["published"], true, "{doc:#}");
    assert_eq!(doc["output"]["decided_by"], "ada");
    assert_eq!(doc["approvals"][0]["decided_by"], "ada");
    let log = d.ok(&["logs", &id]);
    assert!(log.contains("publish approved by ada"), "{log}");
}

#[test]
fn a_python_durable_wait_suspends_the_run_and_a_signal_resumes_it() {
    let d = Dispatch::new();
    let id = start(&d, r#"{"topic":"rust","review":true}"#, &[]);
    common::eventually(20, "the run is suspended", || {
        d.inspect(&id)["state"]["status"] == "suspended"
    });
    assert_eq!(d.status(&id), "paused");
    // Locally the woken attempt's helper is started by `dispatch signal`, with its
    // environment (the SDK's PYTHONPATH here).
    let args = ["signal", &id, "review", "--value", r#""looks good""#];
    let out = d.command().env("PYTHONPATH", sdk()).args(args).output();
    common::checks::ok(&args, &out.expect("run dispatch"));
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["review"], "looks good", "{doc:#}");
    assert_eq!(doc["attempt"], 2);
}
