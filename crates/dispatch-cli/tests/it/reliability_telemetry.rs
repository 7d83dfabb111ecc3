//! Promise 12: inspect-run shows the timeline, tool calls, usage by model,
//! cost and attempts; `--format json` has all of it.

use crate::common;

use common::Dispatch;

#[test]
fn inspect_shows_steps_tool_calls_usage_by_model_and_attempts() {
    let d = Dispatch::new();
    let agent = d.agent(
        "busy",
        "e() { echo \"$1\" >> \"$DISPATCH_EVENTS\"; }\n\
         e '{\"type\":\"step\",\"name\":\"plan\",\"phase\":\"start\"}'\n\
         e '{\"type\":\"usage\",\"model\":\"gpt-4o\",\"input_tokens\":100,\"output_tokens\":20,\"cost_usd\":0.01}'\n\
         sleep 0.1\n\
         e '{\"type\":\"step\",\"name\":\"plan\",\"phase\":\"end\"}'\n\
         e '{\"type\":\"step\",\"name\":\"act\",\"phase\":\"start\"}'\n\
         e '{\"type\":\"tool_call\",\"name\":\"search\",\"input\":{},\"output\":\"x\",\"ok\":true,\"duration_ms\":120}'\n\
         e '{\"type\":\"usage\",\"model\":\"claude\",\"input_tokens\":50,\"output_tokens\":5,\"cost_usd\":0.002}'\n\
         e '{\"type\":\"usage\",\"model\":\"gpt-4o\",\"input_tokens\":10,\"output_tokens\":2,\"cost_usd\":0.001}'\n",
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded");
    let timeline = doc["timeline"].as_array().expect("timeline");
    assert_eq!(timeline.len(), 2, "{timeline:#?}");
    assert_eq!(timeline[0]["name"], "plan");
    assert!(
        timeline[0]["duration_ms"]
            .as_i64()
            .is_some_and(|ms| ms >= 0)
    );
    assert_eq!(timeline[1]["name"], "act");
    assert!(
        timeline[1]["duration_ms"].as_i64().is_some(),
        "closed by the attempt's end"
    );
    assert_eq!(doc["tool_calls"][0]["name"], "search");
    assert_eq!(doc["tool_calls"][0]["ok"], true);
    assert_eq!(doc["tool_calls"][0]["duration_ms"], 120);
    let models = &doc["usage_by_model"];
    assert_eq!(models["gpt-4o"]["input_tokens"], 110);
    assert_eq!(models["claude"]["output_tokens"], 5);
    assert_eq!(doc["attempts"][0]["usage"]["input_tokens"], 160);
    assert!((doc["usage"]["cost_usd"].as_f64().expect("cost") - 0.013).abs() < 1e-9);
    let human = d.ok(&["inspect-run", &id]);
    for section in [
        "Attempts:",
        "Timeline:",
        "Tool calls:",
        "Usage by model:",
        "Cost:",
    ] {
        assert!(human.contains(section), "{section} missing:\n{human}");
    }
    assert!(
        human.contains("search") && human.contains("gpt-4o"),
        "{human}"
    );
    // Human times and no JSON nulls in the human output.
    let created = human
        .lines()
        .find(|l| l.starts_with("Created:"))
        .expect("a Created line");
    assert!(
        created.contains(" UTC (") && created.contains("ago"),
        "{created}"
    );
    assert!(!human.contains("exit null"), "{human}");
}

#[test]
fn a_secret_the_agent_writes_into_its_output_events_or_artifact_names_is_stored_masked() {
    let d = Dispatch::new();
    let secret = "tok-7e1f-MASK-ME";
    let agent = d.agent_with(
        "leaky",
        "echo \"{\\\"type\\\":\\\"tool_call\\\",\\\"name\\\":\\\"x\\\",\\\"output\\\":\\\"$LEAKY_TOKEN\\\"}\" >> \"$DISPATCH_EVENTS\"\n\
         echo 'not json' \"$LEAKY_TOKEN\" >> \"$DISPATCH_EVENTS\"\n\
         echo \"{\\\"token\\\":\\\"$LEAKY_TOKEN\\\"}\" > \"$DISPATCH_OUTPUT\"\n\
         echo hi > \"$DISPATCH_ARTIFACTS/report-$LEAKY_TOKEN.txt\"\n",
        "SECRET LEAKY_TOKEN\n",
    );
    let out = d
        .command()
        .env("LEAKY_TOKEN", secret)
        .args(["run", agent.to_str().expect("utf-8"), "--detach"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let text = doc.to_string();
    assert!(
        !text.contains(secret),
        "the secret is stored in clear: {text}"
    );
    assert_eq!(doc["output"]["token"], "****");
    assert!(text.contains("report-****.txt"), "{}", doc["artifacts"]);
}
