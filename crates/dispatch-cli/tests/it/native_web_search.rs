//! `TOOL BUILTIN web_search` end to end: a native agent whose provider
//! hosts web search (here OpenAI's Responses API, as upstream's `PROVIDER
//! openai`) offers it on every call; the mock model server searches as the
//! real API reports it; each search is a `tool_call` event by the provider,
//! the call's bill includes the search fee, and an Agentfile that cannot
//! honour it is refused at build naming its line.

use crate::common;
use crate::native_common;

use common::Dispatch;
use native_common::{Mock, events_of, model_calls, native_agent};
use serde_json::json;

#[test]
fn a_native_agent_searches_the_web_through_its_provider_and_each_search_is_recorded() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "text", "text": "Rust 1.95 shipped in April.", "chunks": 2,
         "usage": {"input_tokens": 100, "output_tokens": 10},
         "searches": [
            {"query": "rust 1.95 release date", "results": [
                {"url": "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/", "title": "Announcing Rust 1.95.0"}]},
            {"query": "rust release schedule", "results": [
                {"url": "https://releases.rs/", "title": "Rust Release Schedule"}]},
         ]},
    ]));
    let dir = native_agent(
        d.dir.path(),
        "searcher",
        &format!(
            "MODEL gpt-5-mini PROVIDER openai BASE_URL {}\nPRICE gpt-5-mini INPUT 1000 OUTPUT 1000\nTOOL BUILTIN web_search APPROVAL audit",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "Rust 1.95 shipped in April.", "{doc}");

    let body = &mock.requests()[0].body;
    assert!(
        body["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!({"type": "web_search"}))),
        "the request offers the hosted search and no function named web_search: {body}"
    );

    let searches: Vec<_> = events_of(&doc, "tool_call")
        .into_iter()
        .filter(|e| e["name"] == "web_search")
        .collect();
    assert_eq!(searches.len(), 2, "{doc}");
    assert_eq!(searches[0]["by"], "openai");
    assert_eq!(searches[0]["kind"], "hosted");
    assert_eq!(searches[0]["input"]["query"], "rust 1.95 release date");
    assert_eq!(
        searches[1]["output"][0]["url"], "https://releases.rs/",
        "{searches:?}"
    );
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["web_searches"], 2, "{calls:?}");
    // 100 in and 10 out at $1000/M is $0.11; two searches at $0.01 each.
    let cost = calls[0]["cost_usd"].as_f64().expect("a cost");
    assert!((cost - 0.13).abs() < 1e-9, "cost {cost}");
}

/// Anthropic pauses a long turn of hosted searches (`pause_turn`); the run
/// continues it within the same model call: one answer, one `model_call`
/// billed for both requests, every search recorded.
#[test]
fn a_turn_anthropic_paused_is_continued_and_billed_as_one_call() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "text", "text": "Checking. ", "paused": true,
         "usage": {"input_tokens": 100, "output_tokens": 10},
         "searches": [{"query": "rust 1.95 release date", "results": [
            {"url": "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/", "title": "Announcing Rust 1.95.0"}]}]},
        {"kind": "text", "text": "Rust 1.95 shipped in April.",
         "usage": {"input_tokens": 200, "output_tokens": 10},
         "searches": [{"query": "rust release schedule", "results": [
            {"url": "https://releases.rs/", "title": "Rust Release Schedule"}]}]},
    ]));
    let dir = native_agent(
        d.dir.path(),
        "paused-searcher",
        &format!(
            "MODEL claude-sonnet-4-5 PROVIDER anthropic BASE_URL {}\nPRICE claude-sonnet-4-5 INPUT 1000 OUTPUT 1000\nTOOL BUILTIN web_search",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(
        doc["output"], "Checking. Rust 1.95 shipped in April.",
        "{doc}"
    );
    assert_eq!(mock.requests().len(), 2, "the call and its continuation");
    let searches = events_of(&doc, "tool_call");
    assert_eq!(searches.len(), 2, "{doc}");
    assert_eq!(searches[0]["by"], "anthropic");
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["web_searches"], 2, "{calls:?}");
    // 300 in and 20 out at $1000/M is $0.32; two searches at $0.01 each.
    let cost = calls[0]["cost_usd"].as_f64().expect("a cost");
    assert!((cost - 0.34).abs() < 1e-9, "cost {cost}");
}

#[test]
fn web_search_is_refused_at_build_where_it_cannot_be_honoured() {
    let d = Dispatch::new();
    let cases = [
        (
            "MODEL gpt-4o-mini PROVIDER openai_chat\nTOOL BUILTIN web_search",
            4,
            "model `gpt-4o-mini` (PROVIDER openai_chat) has no hosted web search",
        ),
        (
            "MODEL claude-sonnet-4-5\nFALLBACK llama3 PROVIDER openai_compatible BASE_URL http://127.0.0.1:9/v1\nTOOL BUILTIN web_search",
            5,
            "model `llama3` (PROVIDER openai_compatible) has no hosted web search",
        ),
        (
            "MODEL gemini-2.5-flash\nTOOL BUILTIN web_search TIMEOUT 30s",
            4,
            "which TIMEOUT LLM bounds",
        ),
        (
            "MODEL gpt-5-mini\nTOOL BUILTIN web_search APPROVAL always",
            4,
            "no one can approve a search before it runs",
        ),
    ];
    for (i, (lines, line, needle)) in cases.iter().enumerate() {
        let dir = native_agent(d.dir.path(), &format!("refused{i}"), lines);
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert_eq!(err.trim().lines().count(), 1, "{lines}: {err}");
        assert!(err.contains(&format!("line {line}: ")), "{lines}: {err}");
        assert!(err.contains(needle), "{lines}: {err}");
    }
}
