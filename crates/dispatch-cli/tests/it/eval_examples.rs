//! The examples' evals run offline in the project's own test suite, from
//! the cassettes committed next to them (recorded from the mock model server).

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};

use common::Dispatch;
use native_common::Mock;
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// `dispatch eval examples/<name> --replay <its cassettes> [extra]` with no
/// key and no model server; asserts every case passed; the JSON report.
fn offline(name: &str, extra: &[&str]) -> Value {
    let d = Dispatch::new();
    let dir = example(name);
    let cassettes = dir.join("evals/cassettes");
    let mut args = vec![
        "eval",
        dir.to_str().expect("utf-8"),
        "--replay",
        cassettes.to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    args.extend(extra);
    let out = d
        .command()
        .args(&args)
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
    assert_eq!(report["summary"]["passed"], report["summary"]["runs"]);
    assert!(report["summary"]["tokens"].as_u64().unwrap_or(0) > 0);
    report
}

#[test]
fn triage_passes_its_smoke_eval_offline_without_a_key() {
    let report = offline("triage", &[]);
    assert_eq!(report["summary"]["runs"], 2);
}

#[test]
fn support_passes_its_smoke_eval_offline_with_its_tools_run_or_replayed() {
    // The lookup_order tool runs for real; the model calls are replayed.
    let report = offline("support", &[]);
    assert_eq!(report["summary"]["runs"], 2);
    // And with the tool's results answered from the cassette too.
    let report = offline("support", &["--replay-tools"]);
    assert_eq!(report["summary"]["runs"], 2);
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

/// A copy of `examples/<name>` under `root` whose MODEL line also names
/// `base_url`, its PROVIDER left as written.
fn pointed_at(root: &Path, name: &str, base_url: &str) -> PathBuf {
    let copy = root.join(name);
    let status = std::process::Command::new("cp")
        .args(["-r"])
        .arg(example(name))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let agentfile = copy.join("Agentfile");
    let text = std::fs::read_to_string(&agentfile).expect("Agentfile");
    let text: Vec<String> = text
        .lines()
        .map(|l| match l.starts_with("MODEL ") {
            true => format!("{l} BASE_URL {base_url}"),
            false => l.to_string(),
        })
        .collect();
    std::fs::write(&agentfile, text.join("\n")).expect("Agentfile");
    copy
}

#[test]
fn the_examples_model_lines_speak_the_responses_api_their_provider_names() {
    // `PROVIDER openai` is OpenAI's Responses API: each example's own
    // MODEL line, pointed at the mock, passes its eval over `/responses`.
    let script: Value = serde_json::from_str(
        &std::fs::read_to_string(example("support").join("evals/record-script.json"))
            .expect("record script"),
    )
    .expect("json");
    let triage = json!([
        {"kind": "text", "text": "{\"category\": \"shipping\", \"reply\": \"Sorry: order 12345 is on its way.\"}"},
        {"kind": "text", "text": "{\"category\": \"shipping\", \"reply\": \"We will replace it.\"}"},
    ]);
    for (name, steps) in [("triage", triage), ("support", script["steps"].clone())] {
        let d = Dispatch::new();
        let mock = Mock::start(steps);
        let dir = pointed_at(d.dir.path(), name, &mock.url());
        let out = d
            .command()
            .args([
                "eval",
                dir.to_str().expect("utf-8"),
                "-j",
                "1",
                "--format",
                "json",
            ])
            .env_remove("LLM_BASE_URL")
            .env_remove("LLM_MODEL")
            .env("OPENAI_API_KEY", "sk-unused")
            .env("ANTHROPIC_API_KEY", "unused")
            .output()
            .expect("dispatch eval");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {report:#}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
        assert!(!paths.is_empty(), "{name}");
        assert!(
            paths.iter().all(|p| p == "/v1/responses"),
            "{name}: {paths:?}"
        );
    }
}
