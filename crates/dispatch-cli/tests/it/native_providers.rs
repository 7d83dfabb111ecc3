//! Provider details a user sees, from the binary against the scripted mock
//! model server on loopback (issue #35, item 2): keys from the provider's
//! conventional variable, the provider inferred from the model family (and
//! refused at build when it cannot be), the output-token field of reasoning
//! models, a 200 that is an HTML page, and an answer cut at its output limit.

use crate::common;
use crate::native_common;

use common::Dispatch;
use native_common::{Mock, events_of, model_calls, native_agent, text};
use serde_json::json;

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

fn header(mock: &Mock, i: usize, name: &str) -> Option<String> {
    mock.requests()[i]
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[test]
fn a_model_without_key_sends_its_providers_conventional_variable() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("hi", 5, 1), text("hi", 5, 1)]));
    for (name, line, var, value) in [
        (
            "oai",
            format!(
                "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
                mock.url()
            ),
            "OPENAI_API_KEY",
            "sk-conventional-1",
        ),
        (
            "ant",
            // The SDK's convention: no /v1 on an Anthropic base URL.
            format!(
                "MODEL claude-haiku-4-5 BASE_URL {}",
                mock.url().trim_end_matches("/v1")
            ),
            "ANTHROPIC_API_KEY",
            "sk-ant-conventional-2",
        ),
    ] {
        let dir = native_agent(d.dir.path(), name, &line);
        // Detached: the key is read by the helper that calls the model.
        let out = clean(&d)
            .env(var, value)
            .args(["run", dir.to_str().expect("utf-8"), "--detach"])
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(d.wait_terminal(&id)["status"], "succeeded", "{name}");
    }
    assert_eq!(
        header(&mock, 0, "authorization").as_deref(),
        Some("Bearer sk-conventional-1")
    );
    assert_eq!(mock.requests()[1].path, "/v1/messages");
    assert_eq!(
        header(&mock, 1, "x-api-key").as_deref(),
        Some("sk-ant-conventional-2")
    );
}

#[test]
fn a_missing_key_is_one_line_naming_the_variable_but_a_local_server_needs_none() {
    let d = Dispatch::new();
    let dir = native_agent(d.dir.path(), "keyless", "MODEL gpt-4o-mini");
    let out = clean(&d)
        .args(["run", dir.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OPENAI_API_KEY is not set"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let mock = Mock::start(json!([text("hi", 5, 1)]));
    let local = native_agent(
        d.dir.path(),
        "local",
        &format!("MODEL llama3.2 BASE_URL {}", mock.url()),
    );
    let out = clean(&d)
        .args(["run", local.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(header(&mock, 0, "authorization"), None);
}

#[test]
fn a_model_of_no_known_family_is_refused_at_build_naming_its_line() {
    let d = Dispatch::new();
    for (lines, want) in [
        ("MODEL llama3.2", "add `PROVIDER"),
        ("MODEL gpt-4o-mini\nFALLBACK mistral-large", "add `PROVIDER"),
    ] {
        let dir = native_agent(d.dir.path(), "unknown", lines);
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert!(err.contains(want), "{lines}: {err}");
        let line = 2 + lines.lines().count();
        assert!(err.contains(&format!("line {line}")), "{lines}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn a_reasoning_model_is_sent_max_completion_tokens() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("hi", 5, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "thinker",
        &format!(
            "MODEL o4-mini PROVIDER openai_chat BASE_URL {}\nLIMIT OUTPUT_TOKENS 64",
            mock.url()
        ),
    );
    d.ok(&["run", dir.to_str().expect("utf-8")]);
    let body = &mock.requests()[0].body;
    assert_eq!(body["max_completion_tokens"], 64, "{body}");
    assert!(body.get("max_tokens").is_none(), "{body}");
}

#[test]
fn an_html_page_answered_with_200_fails_the_run_naming_url_and_content_type() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([{"kind": "page"}]));
    let dir = native_agent(
        d.dir.path(),
        "portal",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("POST {}/chat/completions", mock.url())),
        "{reason}"
    );
    assert!(reason.contains("text/html"), "{reason}");
    assert!(reason.contains("Sign in to Guest Wi-Fi"), "{reason}");
    assert!(!reason.contains("cut"), "{reason}");
}

#[test]
fn an_answer_cut_at_limit_output_tokens_fails_the_run_unless_allowed() {
    let d = Dispatch::new();
    let cut = json!({"kind": "text", "text": "{\"reply\": \"On its", "truncated": true,
                     "usage": {"input_tokens": 10, "output_tokens": 8}});
    let mock = Mock::start(json!([cut.clone(), cut]));
    for (name, allow) in [("strict", ""), ("lenient", " ALLOW_TRUNCATION")] {
        let dir = native_agent(
            d.dir.path(),
            name,
            &format!(
                "MODEL claude-haiku-4-5 PROVIDER anthropic BASE_URL {}\nLIMIT OUTPUT_TOKENS 8{allow}",
                mock.url()
            ),
        );
        let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
        let doc = d.wait_terminal(&id);
        let call = &model_calls(&doc)[0];
        assert_eq!(call["finish_reason"], "length", "{name}: {call}");
        assert_eq!(call["truncated"], true, "{name}: {call}");
        let warnings = events_of(&doc, "warning");
        assert!(
            warnings.iter().any(|w| w["message"]
                .as_str()
                .is_some_and(|m| m.contains("cut at LIMIT OUTPUT_TOKENS 8"))),
            "{name}: {warnings:?}"
        );
        let human = d.ok(&["inspect-run", &id]);
        assert!(human.contains("truncated"), "{name}: {human}");
        if allow.is_empty() {
            assert_eq!(doc["status"], "failed");
            let reason = doc["state"]["reason"].as_str().expect("reason");
            assert!(reason.contains("output_truncated: "), "{reason}");
            assert!(reason.contains("ALLOW_TRUNCATION"), "{reason}");
        } else {
            assert_eq!(doc["status"], "succeeded", "{doc}");
            assert_eq!(doc["output"], "{\"reply\": \"On its");
        }
    }
    assert_eq!(mock.requests().len(), 2, "a cut answer is not retried");
}
