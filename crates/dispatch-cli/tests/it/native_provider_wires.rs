//! Gemini's own API, OpenAI's Responses API (`PROVIDER openai`) and
//! `REASONING`, from the binary against the scripted mock model server on
//! loopback speaking those wire formats (issue #35, item 2): a tool round
//! trip, usage and cost recorded like every provider's, keys from the
//! conventional variables, and reasoning fields on each wire, overridden
//! by `dispatch run --reasoning-effort`.

use crate::common;
use crate::native_common;

use std::path::Path;

use common::Dispatch;
use native_common::{Mock, model_calls, native_agent, text};
use serde_json::{Value, json};

/// A `dispatch` command without any model key or `LLM_*` override of the test's environment.
fn clean(d: &Dispatch) -> std::process::Command {
    let mut c = d.command();
    for k in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "LLM_API_KEY",
        "LLM_BASE_URL",
        "LLM_MODEL",
    ] {
        c.env_remove(k);
    }
    c
}

/// Runs `dir` detached with `env` and `extra` arguments; waits for its end.
fn run(d: &Dispatch, dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Value {
    let out = clean(d)
        .args(["run", dir.to_str().expect("utf-8"), "--detach"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .expect("dispatch run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    d.wait_terminal(&id)
}

fn header(r: &dispatch_test_support::mock::Received, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// An agent whose model (`model_line`) has a LOCAL `lookup` tool.
fn tool_agent(root: &Path, name: &str, model_line: &str) -> std::path::PathBuf {
    let dir = native_agent(root, name, &format!("{model_line}\nTOOL LOCAL lookup.sh"));
    std::fs::write(dir.join("lookup.sh"), "echo 'order 12345 ships tomorrow'\n").expect("tool");
    dir
}

/// One tool round, then the answer, with usage given.
fn steps() -> Value {
    json!([
        {"kind": "tool_calls", "calls": [{"name": "lookup", "arguments": {"order": "12345"}}],
         "usage": {"input_tokens": 1000, "output_tokens": 100}},
        text("It ships tomorrow.", 2000, 200),
    ])
}

/// The run succeeded with the answer, its tool ran, and both model calls
/// were recorded and billed at `price` (USD per 1M input, output tokens).
fn assert_billed(doc: &Value, provider: &str, price: (f64, f64)) {
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "It ships tomorrow.");
    let calls = model_calls(doc);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["provider"], provider);
    assert_eq!(calls[0]["finish_reason"], "tool_calls");
    assert_eq!(calls[1]["input_tokens"], 2000);
    assert_eq!(calls[1]["output_tokens"], 200);
    assert_eq!(doc["usage"]["input_tokens"], 3000);
    assert_eq!(doc["usage"]["output_tokens"], 300);
    let want = (3000.0 * price.0 + 300.0 * price.1) / 1e6;
    let cost = doc["usage"]["cost_usd"].as_f64().expect("priced");
    assert!((cost - want).abs() < 1e-9, "{cost} != {want}");
    let tool = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "tool_call")
        .unwrap_or_else(|| panic!("a tool_call event: {doc}"));
    assert_eq!(tool["data"]["name"], "lookup", "{tool}");
}

#[test]
fn a_gemini_agent_calls_its_tool_over_gemini_wire_with_the_conventional_key() {
    let d = Dispatch::new();
    let mock = Mock::start(steps());
    // Inferred from the model family; the key from GEMINI_API_KEY.
    let line = format!(
        "MODEL gemini-2.5-flash BASE_URL {}",
        mock.server.gemini_base_url()
    );
    let dir = tool_agent(d.dir.path(), "gem", &line);
    let doc = run(&d, &dir, &[("GOOGLE_API_KEY", "g-conventional")], &[]);
    assert_billed(&doc, "gemini", (0.30, 2.50));
    let reqs = mock.requests();
    assert_eq!(
        reqs[0].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(
        header(&reqs[0], "x-goog-api-key").as_deref(),
        Some("g-conventional")
    );
    let parts = &reqs[1].body["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(parts["name"], "lookup", "{}", reqs[1].body);
    assert!(
        parts["response"]["result"]
            .as_str()
            .is_some_and(|r| r.contains("ships tomorrow")),
        "{parts}"
    );
}

#[test]
fn provider_openai_speaks_the_responses_api_and_openai_chat_chat_completions() {
    let d = Dispatch::new();
    let mock = Mock::start(steps());
    let line = format!("MODEL gpt-4o-mini PROVIDER openai BASE_URL {}", mock.url());
    let dir = tool_agent(d.dir.path(), "resp", &line);
    let doc = run(&d, &dir, &[("OPENAI_API_KEY", "sk-resp")], &[]);
    assert_billed(&doc, "openai", (0.15, 0.60));
    let reqs = mock.requests();
    assert_eq!(reqs[0].path, "/v1/responses");
    assert_eq!(
        header(&reqs[0], "authorization").as_deref(),
        Some("Bearer sk-resp")
    );
    let input = reqs[1].body["input"].as_array().expect("input items");
    assert!(
        input.iter().any(|i| i["type"] == "function_call_output"),
        "{input:?}"
    );
    mock.server
        .push(serde_json::from_value(text("hi", 1, 1)).expect("step"));
    let chat = native_agent(
        d.dir.path(),
        "chat",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let doc = run(&d, &chat, &[("OPENAI_API_KEY", "sk-chat")], &[]);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(mock.requests()[2].path, "/v1/chat/completions");
}

#[test]
fn reasoning_reaches_each_wire_and_the_run_flag_overrides_it() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let agents = [
        (
            "chat",
            format!("MODEL o4-mini PROVIDER openai_chat BASE_URL {}", mock.url()),
        ),
        (
            "resp",
            format!("MODEL o4-mini PROVIDER openai BASE_URL {}", mock.url()),
        ),
        (
            "claude",
            format!("MODEL claude-sonnet-4-5 BASE_URL {}", mock.url()),
        ),
        (
            "gem",
            format!(
                "MODEL gemini-2.5-pro BASE_URL {}",
                mock.server.gemini_base_url()
            ),
        ),
    ];
    let keys = [
        ("OPENAI_API_KEY", "k"),
        ("ANTHROPIC_API_KEY", "k"),
        ("GEMINI_API_KEY", "k"),
    ];
    for (name, line) in &agents {
        let dir = native_agent(
            d.dir.path(),
            name,
            &format!("{line}\nREASONING effort high"),
        );
        run(&d, &dir, &keys, &[]);
        run(&d, &dir, &keys, &["--reasoning-effort", "low"]);
    }
    let bodies: Vec<Value> = mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 8);
    assert_eq!(bodies[0]["reasoning_effort"], "high");
    assert_eq!(bodies[1]["reasoning_effort"], "low");
    assert_eq!(bodies[2]["reasoning"], json!({"effort": "high"}));
    assert_eq!(bodies[3]["reasoning"], json!({"effort": "low"}));
    assert_eq!(
        bodies[4]["thinking"],
        json!({"type": "enabled", "budget_tokens": 24576})
    );
    assert_eq!(bodies[4]["max_tokens"], 4096 + 24576);
    assert_eq!(bodies[5]["thinking"]["budget_tokens"], 1024);
    assert_eq!(
        bodies[6]["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 24576})
    );
    assert_eq!(
        bodies[7]["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 1024})
    );
    let dir = d.dir.path().join("chat");
    let err = d.fails(
        &[
            "run",
            dir.to_str().expect("utf-8"),
            "--reasoning-effort",
            "extreme",
        ],
        125,
    );
    assert!(err.contains("--reasoning-effort: `extreme`"), "{err}");
    assert!(err.contains("low, medium, high"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
