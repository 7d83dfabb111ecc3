//! The examples' evals run offline in the project's own test suite, from
//! the cassettes committed next to them (recorded from the mock model server).

mod common;

use std::path::PathBuf;

use common::Dispatch;
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[test]
fn triage_passes_its_smoke_eval_offline_without_a_key() {
    let d = Dispatch::new();
    let dir = example("triage");
    let cassettes = dir.join("evals/cassettes");
    let args = [
        "eval",
        dir.to_str().expect("utf-8"),
        "--replay",
        cassettes.to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    let out = d
        .command()
        .args(args)
        .env_remove("LLM_BASE_URL")
        .env_remove("LLM_MODEL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .expect("dispatch eval");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["summary"]["runs"], 2);
    assert_eq!(report["summary"]["passed"], 2);
    assert!(report["summary"]["tokens"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn a_workflows_messages_are_checked_edge_by_edge() {
    let d = Dispatch::new();
    let dir = example("newsroom");
    let cases = d.dir.path().join("flow.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "the writer sends one draft back"
payload = { topic = "tides" }
expect.status = "succeeded"
expect.messages = { sent = ["researcher -> analyst RESULT", "writer -> analyst VALIDATION", "writer -> __end__"], not_sent = ["writer -> analyst ERROR"], count = { "analyst -> writer" = 2 }, max = 12 }

[[case]]
name = "the researcher never hears back"
payload = { topic = "tides" }
expect.messages = { sent = ["writer -> researcher"] }
"#,
    )
    .expect("cases");
    let out = d
        .command()
        .args([
            "eval",
            dir.to_str().expect("utf-8"),
            "--cases",
            cases.to_str().expect("utf-8"),
            "--format",
            "json",
        ])
        .output()
        .expect("dispatch eval");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["results"][0]["passed"], true, "{report:#}");
    let failure = report["results"][1]["failures"][0]
        .as_str()
        .expect("a failure");
    assert!(
        failure.starts_with("expect.messages: no message `writer -> researcher`")
            && failure.contains("researcher -> writer RESULT"),
        "{failure}"
    );
    // A malformed edge is refused before anything runs.
    std::fs::write(
        &cases,
        "[[case]]\nname = \"x\"\nexpect.messages = { sent = [\"writer analyst\"] }\n",
    )
    .expect("cases");
    let err = d.fails(
        &[
            "eval",
            dir.to_str().expect("utf-8"),
            "--cases",
            cases.to_str().expect("utf-8"),
        ],
        125,
    );
    assert!(err.contains("`writer analyst` is not an edge"), "{err}");
}
