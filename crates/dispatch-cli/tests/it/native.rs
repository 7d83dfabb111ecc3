//! The native agent courier (`FROM agent`) from the binary, against the
//! scripted mock model server on loopback: streaming, usage and cost,
//! retries and fallbacks, budgets, timeouts, sessions, secrets, bad input.

use crate::common;
use crate::native_common;

use common::Dispatch;
use native_common::{Mock, message_texts, model_calls, native_agent, text, tool};
use serde_json::json;

fn model_line(mock: &Mock, model: &str, provider: &str) -> String {
    format!("MODEL {model} PROVIDER {provider} BASE_URL {}", mock.url())
}

#[test]
fn streamed_text_becomes_the_output_with_usage_and_cost_per_call_and_run() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text(
        "{\"category\":\"shipping\",\"reply\":\"On its way\"}",
        120,
        30
    )]));
    let dir = native_agent(
        d.dir.path(),
        "triage",
        &format!(
            "{}\nPROMPT Classify the ticket.\nIDENTITY You are Triage.",
            model_line(&mock, "gpt-4o-mini", "openai_chat")
        ),
    );
    let out = d.run(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--job",
        r#"{"ticket":"late"}"#,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("On its way"),
        "the answer streams to the foreground: {stdout}"
    );
    let id = d.ok(&["ps", "-a", "-q"]);
    let doc = d.inspect(id.lines().next().expect("one run"));
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(
        doc["output"],
        json!({"category": "shipping", "reply": "On its way"})
    );
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(c["model"], "gpt-4o-mini");
    assert_eq!(c["provider"], "openai_chat");
    assert_eq!(c["input_tokens"], 120);
    assert_eq!(c["output_tokens"], 30);
    assert_eq!(c["finish_reason"], "stop");
    let want = (120.0 * 0.15 + 30.0 * 0.60) / 1e6;
    assert!(
        (c["cost_usd"].as_f64().expect("priced") - want).abs() < 1e-12,
        "{c}"
    );
    assert!(
        c["latency_ms"].is_u64() && c["first_token_ms"].is_u64(),
        "{c}"
    );
    assert_eq!(doc["usage"]["input_tokens"], 120);
    assert_eq!(doc["usage"]["output_tokens"], 30);
    // The request: system prompt with its sections, payload as the first user message.
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let body = &reqs[0].body;
    assert_eq!(body["stream"], true);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().expect("system text");
    assert!(
        system.starts_with("# Identity\n\nYou are Triage."),
        "{system}"
    );
    assert!(
        system.contains("# Task\n\nClassify the ticket."),
        "{system}"
    );
    assert_eq!(messages[1]["content"], "{\n  \"ticket\": \"late\"\n}");
    // The exchange is kept content-addressed with the run.
    let sha = c["request_sha256"].as_str().expect("request digest");
    let run_dir = d.root().join("runs").join(doc["id"].as_str().expect("id"));
    let stored = dispatch_runtime::call_records::read(&run_dir, sha).expect("the request's record");
    assert_eq!(
        dispatch_core::brief::sha256_hex(stored.as_bytes()),
        sha,
        "the record is the text its digest names"
    );
    assert!(
        !run_dir.join("calls").exists(),
        "one file of records, not a file per record"
    );
}

/// A call waiting on its answer has its request recorded already: the run
/// does not also hold the text it sent while it waits (issue #38 item 2),
/// and its `model_call` names that record once the answer came.
#[test]
fn a_call_waiting_on_its_answer_has_its_request_recorded_already() {
    let d = Dispatch::new();
    let mut late = text("late", 10, 2);
    late["delay_ms"] = json!(6_000);
    let mock = Mock::start(json!([late]));
    let dir = native_agent(
        d.dir.path(),
        "waiter",
        &model_line(&mock, "gpt-4o-mini", "openai_chat"),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while mock.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the call went out");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let seen = std::time::Instant::now();
    let sent = mock.requests()[0].body.clone();
    let run_dir = d.root().join("runs").join(&id);
    let recorded = |sha: &str| {
        dispatch_runtime::call_records::read(&run_dir, sha)
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
    };
    let waiting = dispatch_runtime::call_records::all(&run_dir);
    assert!(
        seen.elapsed() < std::time::Duration::from_secs(5),
        "read while the mock still held its answer"
    );
    let sha = waiting
        .keys()
        .find(|sha| recorded(sha).as_ref() == Some(&sent))
        .expect("the request's record, written as it went out")
        .clone();
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let c = &model_calls(&doc)[0];
    assert_eq!(c["request_sha256"], sha.as_str(), "{c}");
}

#[test]
fn a_model_without_a_price_has_unknown_cost_and_limit_cost_is_refused() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("hi", 10, 2)]));
    let dir = native_agent(
        d.dir.path(),
        "local",
        &model_line(&mock, "llama3.2", "openai_compatible"),
    );
    let a = dir.to_str().expect("utf-8");
    let id = d.ok(&["run", a, "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded");
    assert!(
        model_calls(&doc)[0]["cost_usd"].is_null(),
        "unknown, never 0"
    );
    let human = d.ok(&["inspect-run", &id]);
    assert!(human.contains("unknown"), "{human}");
    let limited = native_agent(
        d.dir.path(),
        "limited",
        &format!(
            "{}\nLIMIT COST 1.00",
            model_line(&mock, "llama3.2", "openai_compatible")
        ),
    );
    let err = d.fails(&["run", limited.to_str().expect("utf-8")], 125);
    assert!(
        err.contains("LIMIT COST cannot be enforced") && err.contains("PRICE llama3.2"),
        "{err}"
    );
}

#[test]
fn a_500_then_a_200_is_one_recorded_retry() {
    let d = Dispatch::new();
    let mock =
        Mock::start(json!([{"kind": "error", "status": 500, "message": "boom"}, text("ok", 5, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "retry",
        &model_line(&mock, "gpt-4o-mini", "openai_chat"),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["status"], 500);
    assert!(
        calls[0]["error"].as_str().expect("error").contains("500"),
        "{}",
        calls[0]
    );
    assert_eq!(calls[1]["retry"], 1);
    assert_eq!(doc["attempt"], 1, "a retried call is not a new attempt");
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn a_429_waits_its_retry_after() {
    let d = Dispatch::new();
    let mock = Mock::start(
        json!([{"kind": "error", "status": 429, "retry_after": 1, "message": "slow down"}, text("ok", 5, 1)]),
    );
    let dir = native_agent(
        d.dir.path(),
        "limited",
        &model_line(&mock, "claude-haiku-4-5", "anthropic"),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].path, "/v1/messages");
    let gap = reqs[1].received_at_us - reqs[0].received_at_us;
    assert!(gap >= 1_000_000, "Retry-After: 1 honoured, waited {gap} us");
}

#[test]
fn when_the_primary_is_down_the_fallback_answers_and_is_recorded() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("from the fallback", 7, 3)]));
    // Nothing listens on the primary's port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/v1", closed.local_addr().expect("addr"));
    drop(closed);
    let dir = native_agent(
        d.dir.path(),
        "fallback",
        &format!(
            "MODEL gpt-4o BASE_URL {dead} PROVIDER openai_chat\nFALLBACK claude-haiku-4-5 PROVIDER anthropic BASE_URL {}",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "from the fallback");
    let calls = model_calls(&doc);
    assert_eq!(
        calls.len(),
        4,
        "three tries of the primary, then the fallback: {calls:?}"
    );
    assert!(
        calls[..3]
            .iter()
            .all(|c| c["model"] == "gpt-4o" && c["error"].is_string())
    );
    assert_eq!(calls[3]["model"], "claude-haiku-4-5");
    assert_eq!(calls[3]["fallback"], true);
    assert_eq!(calls[3]["fallback_from"], "gpt-4o");
}

#[test]
fn a_stream_that_crosses_the_token_budget_is_aborted() {
    let d = Dispatch::new();
    let long = "word ".repeat(2_000);
    let mock =
        Mock::start(json!([{"kind": "text", "text": long, "chunks": 50, "chunk_delay_ms": 5}]));
    let dir = native_agent(
        d.dir.path(),
        "budget",
        &format!(
            "{}\nLIMIT TOKENS 300",
            model_line(&mock, "gpt-4o-mini", "openai_chat")
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("budget_exceeded") && reason.contains("stream aborted"),
        "{reason}"
    );
    assert_eq!(model_calls(&doc)[0]["finish_reason"], "budget_exceeded");
    assert_eq!(doc["attempt"], 1, "a budget stop is never retried");
}

#[test]
fn timeout_llm_ends_a_stalled_stream_and_the_fallback_answers() {
    let d = Dispatch::new();
    let stall = json!({"kind": "stall", "text_before": "thinking"});
    let mock = Mock::start(json!([stall, stall, stall, text("done", 3, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "stalled",
        &format!(
            "{}\nFALLBACK gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTIMEOUT LLM 1s",
            model_line(&mock, "gpt-4o", "openai_chat"),
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 4);
    assert!(
        calls[0]["error"]
            .as_str()
            .expect("error")
            .contains("TIMEOUT LLM"),
        "{}",
        calls[0]
    );
    // The provider had begun to answer: billed, estimated.
    assert_eq!(calls[0]["finish_reason"], "timed_out");
    assert_eq!(calls[0]["estimated"], true);
    assert_eq!(calls[0]["output_tokens"], 2, "\"thinking\": 2 tokens");
    assert_eq!(calls[3]["model"], "gpt-4o-mini");
}

#[test]
fn checkpoints_after_the_first_hold_only_what_changed_and_fold_back_whole() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        tool("search"),
        tool("search"),
        tool("search"),
        tool("search"),
        text("done", 10, 2)
    ]));
    let dir = native_agent(
        d.dir.path(),
        "rounds",
        &model_line(&mock, "gpt-4o-mini", "openai"),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let checkpoints = native_common::events_of(&doc, "checkpoint");
    // Before and after each of 4 rounds' tools, and the answer.
    assert_eq!(checkpoints.len(), 9, "{checkpoints:?}");
    assert!(
        checkpoints[0]["state"]["messages"].is_array(),
        "whole first"
    );
    for c in &checkpoints[1..] {
        let added = c["conversation_delta"]["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("a delta: {c}"));
        // One assistant message or one tool result: not the conversation.
        assert!(added.len() <= 1, "{c}");
        assert!(c.get("state").is_none(), "{c}");
    }
    // inspect-run folds them back: the question, 4 × (call, result), the answer.
    let conv = doc["conversation"]["messages"].as_array().expect("folded");
    assert_eq!(conv.len(), 10, "{conv:?}");
    assert_eq!(conv[9]["content"], "done");
    assert_eq!(doc["conversation"]["rounds"], 4);
}

#[test]
fn a_model_that_keeps_calling_tools_stops_at_limit_tool_rounds() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([tool("search"), tool("search"), tool("search")]));
    let dir = native_agent(
        d.dir.path(),
        "loopy",
        &format!(
            "{}\nLIMIT TOOL_ROUNDS 2",
            model_line(&mock, "gpt-4o-mini", "openai_chat")
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains("LIMIT TOOL_ROUNDS 2"), "{reason}");
    assert_eq!(mock.requests().len(), 3);
    // The model was told there is no such tool.
    let third = &mock.requests()[2].body;
    let last = third["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("a message");
    assert_eq!(last["role"], "tool");
    assert!(
        last["content"]
            .as_str()
            .expect("text")
            .contains("no tool named `search`")
    );
}

#[test]
fn a_provider_that_answers_garbage_or_cuts_its_stream_fails_the_attempt_with_the_reason() {
    let d = Dispatch::new();
    for (name, step, want) in [
        (
            "garbage",
            json!({"kind": "garbage", "body": "not json at all"}),
            "bad answer",
        ),
        (
            "cut",
            json!({"kind": "cut", "text_before": "half an ans"}),
            "bad answer",
        ),
        (
            "refused",
            json!({"kind": "error", "status": 401, "message": "invalid x-api-key"}),
            "invalid x-api-key",
        ),
    ] {
        let mock = Mock::start(json!([step]));
        let dir = native_agent(
            d.dir.path(),
            name,
            &model_line(&mock, "gpt-4o-mini", "openai_chat"),
        );
        let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
        let doc = d.wait_terminal(&id);
        assert_eq!(doc["status"], "failed", "{name}");
        let reason = doc["state"]["reason"].as_str().expect("reason");
        assert!(reason.contains(want), "{name}: {reason}");
        assert_eq!(
            mock.requests().len(),
            1,
            "{name}: not retried on the same model"
        );
    }
}

#[test]
fn a_session_continues_across_runs_and_processes() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        text("Hello Ada", 10, 2),
        text("Your name is Ada", 20, 4)
    ]));
    let dir = native_agent(
        d.dir.path(),
        "chatty",
        &model_line(&mock, "gpt-4o-mini", "openai_chat"),
    );
    let a = dir.to_str().expect("utf-8");
    let first = d.ok(&[
        "run",
        a,
        "--detach",
        "--session",
        "alice",
        "--job",
        "\"I am Ada\"",
    ]);
    assert_eq!(d.wait_terminal(&first)["status"], "succeeded");
    let second = d.ok(&[
        "run",
        a,
        "--detach",
        "--session",
        "alice",
        "--job",
        "\"Who am I?\"",
    ]);
    let doc = d.wait_terminal(&second);
    assert_eq!(doc["output"], "Your name is Ada");
    let body = &mock.requests()[1].body;
    let texts = message_texts(body);
    assert_eq!(texts, ["I am Ada", "Hello Ada", "Who am I?"], "{body}");
    let conv = &doc["conversation"]["messages"];
    assert_eq!(conv.as_array().map(Vec::len), Some(4));
}

#[test]
fn no_stored_request_event_or_log_contains_the_api_key() {
    let d = Dispatch::new();
    let key = "sk-test-DO-NOT-STORE-7f3a";
    let mock = Mock::start(json!([text(&format!("the key is {key}"), 5, 5)]));
    let dir = native_agent(
        d.dir.path(),
        "secretive",
        &format!(
            "{} KEY OPENAI_API_KEY\nSECRET OPENAI_API_KEY",
            model_line(&mock, "gpt-4o-mini", "openai_chat")
        ),
    );
    let out = d
        .command()
        .env("OPENAI_API_KEY", key)
        .args(["run", dir.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auth = mock.requests()[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(
        auth.as_deref(),
        Some(format!("Bearer {key}").as_str()),
        "the key reached the provider"
    );
    // Nothing under .dispatch holds it: database, WAL, logs, calls, briefs.
    let mut stack = vec![d.root()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else {
            let bytes = std::fs::read(&p).unwrap_or_default();
            let found = bytes.windows(key.len()).any(|w| w == key.as_bytes());
            assert!(!found, "{} holds the API key", p.display());
        }
    }
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(key),
        "masked on the terminal too"
    );
}

#[test]
fn print_prompt_shows_the_request_and_calls_nothing() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = native_agent(
        d.dir.path(),
        "shown",
        &format!(
            "{}\nPROMPT Be brief.\nLIMIT OUTPUT_TOKENS 64",
            model_line(&mock, "gpt-4o-mini", "openai_chat")
        ),
    );
    let out = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--print-prompt",
        "--job",
        "\"hi\"",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["url"], format!("{}/chat/completions", mock.url()));
    assert_eq!(v["body"]["messages"][1]["content"], "hi");
    assert_eq!(v["body"]["max_tokens"], 64);
    assert!(mock.requests().is_empty());
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "no run was created");
}

#[test]
fn native_agent_bad_input_is_refused_before_anything_runs() {
    let d = Dispatch::new();
    for (lines, want) in [
        ("", "FROM agent needs a MODEL"),
        ("MODEL gpt-4o PROVIDER azure", "unknown PROVIDER `azure`"),
        ("MODEL gpt-4o BASE_URL localhost", "is not a URL"),
    ] {
        let dir = native_agent(d.dir.path(), "bad", lines);
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert!(err.contains(want), "{lines}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let dir = native_agent(
        d.dir.path(),
        "keyless",
        "MODEL gpt-4o KEY OPENAI_API_KEY\nSECRET OPENAI_API_KEY",
    );
    let out = d
        .command()
        .env_remove("OPENAI_API_KEY")
        .args(["run", dir.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`OPENAI_API_KEY`, which is not set"), "{err}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "nothing ran");
}
