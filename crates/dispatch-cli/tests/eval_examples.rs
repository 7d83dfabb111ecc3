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
