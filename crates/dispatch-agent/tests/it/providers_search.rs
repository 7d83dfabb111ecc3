//! `TOOL BUILTIN web_search`: the hosted search tool of each provider that
//! has one, through the real HTTP client code against the scripted mock
//! model server speaking that provider's wire format: the request offers
//! the provider's tool (OpenAI's `web_search`, Anthropic's
//! `web_search_20250305`, Gemini's `google_search`), and each search the
//! stream reports (`web_search_call` items, `server_tool_use` blocks and
//! their results, `groundingMetadata`) comes back as a `WebSearch`.

use dispatch_agent::anthropic::Anthropic;
use dispatch_agent::gemini::Gemini;
use dispatch_agent::openai_responses::OpenAiResponses;
use dispatch_agent::provider::{Source, WebSearch};
use dispatch_agent::{
    Delta, Exchange, FinishReason, Flow, Message, ModelRequest, ModelResponse, Provider,
    ProviderError,
};
use dispatch_test_support::mock::{MockServer, Script};
use serde_json::{Value, json};

/// One answer that searched twice, then said its text.
fn searching_step() -> Value {
    json!({"kind": "text", "text": "Rust 1.95 shipped in April.", "searches": [
        {"query": "rust 1.95 release date", "results": [
            {"url": "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/", "title": "Announcing Rust 1.95.0"},
        ]},
        {"query": "rust release schedule", "results": [
            {"url": "https://releases.rs/", "title": "Rust Release Schedule"},
        ]},
    ]})
}

async fn mock(steps: Value) -> MockServer {
    let script: Script = serde_json::from_value(json!({ "steps": steps })).expect("script");
    MockServer::start(script).await.expect("mock starts")
}

fn request(model: &str, web_search: bool) -> ModelRequest<'static> {
    ModelRequest {
        model: model.into(),
        system: "Be brief.".into(),
        messages: std::borrow::Cow::Owned(vec![Message::user("when did rust 1.95 ship?")]),
        tools: vec![].into(),
        max_output_tokens: None,
        reasoning: None,
        web_search,
    }
}

async fn call(p: &dyn Provider, req: &ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
    let mut ex = Exchange::default();
    let mut on = |_: Delta<'_>| Flow::Continue;
    p.stream(req, &mut on, &mut ex).await
}

fn page(url: &str, title: &str) -> Source {
    Source {
        url: url.into(),
        title: title.into(),
    }
}

/// What each provider should report for [`searching_step`]; Gemini gives
/// every page to the last query (its grounding does not say which query
/// found which page).
fn expected(gemini: bool) -> Vec<WebSearch> {
    let blog = page(
        "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/",
        "Announcing Rust 1.95.0",
    );
    let schedule = page("https://releases.rs/", "Rust Release Schedule");
    if gemini {
        return vec![
            WebSearch {
                query: "rust 1.95 release date".into(),
                sources: vec![],
            },
            WebSearch {
                query: "rust release schedule".into(),
                sources: vec![blog, schedule],
            },
        ];
    }
    vec![
        WebSearch {
            query: "rust 1.95 release date".into(),
            sources: vec![blog],
        },
        WebSearch {
            query: "rust release schedule".into(),
            sources: vec![schedule],
        },
    ]
}

#[tokio::test]
async fn the_responses_api_offers_web_search_and_reports_each_web_search_call() {
    let m = mock(json!([searching_step(), searching_step()])).await;
    let p = OpenAiResponses::new(dispatch_http::fallback(), Some(m.base_url()), None);
    let r = call(&p, &request("gpt-5-mini", true))
        .await
        .expect("an answer");
    assert_eq!(r.text, "Rust 1.95 shipped in April.");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert!(
        r.tool_calls.is_empty(),
        "a hosted search is no tool call of ours"
    );
    // OpenAI lists only the URL of each source; titles come from citations.
    let urls: Vec<Vec<&str>> = r
        .searches
        .iter()
        .map(|s| s.sources.iter().map(|p| p.url.as_str()).collect())
        .collect();
    let want = expected(false);
    assert_eq!(
        r.searches.iter().map(|s| &s.query).collect::<Vec<_>>(),
        want.iter().map(|s| &s.query).collect::<Vec<_>>()
    );
    assert_eq!(
        urls,
        vec![
            vec!["https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/"],
            vec!["https://releases.rs/"]
        ]
    );
    let body = &m.requests()[0].body;
    assert!(
        body["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!({"type": "web_search"}))),
        "{body}"
    );
    assert_eq!(body["include"], json!(["web_search_call.action.sources"]));

    // Without TOOL BUILTIN web_search the request offers none, and the
    // mock answers as the API would: it could not have searched.
    let err = call(&p, &request("gpt-5-mini", false))
        .await
        .expect_err("no search tool offered");
    assert!(
        matches!(err, ProviderError::Refused { status: 400, .. }),
        "{err:?}"
    );
    assert!(m.requests()[1].body.get("tools").is_none());
}

#[tokio::test]
async fn anthropic_offers_its_web_search_tool_and_pairs_each_search_with_its_results() {
    let m = mock(json!([searching_step()])).await;
    let p = Anthropic::new(
        dispatch_http::fallback(),
        Some(m.base_url()),
        Some("k".into()),
    );
    let r = call(&p, &request("claude-sonnet-4-5", true))
        .await
        .expect("an answer");
    assert_eq!(r.text, "Rust 1.95 shipped in April.");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert!(r.tool_calls.is_empty());
    assert_eq!(r.searches, expected(false));
    let body = &m.requests()[0].body;
    assert_eq!(
        body["tools"],
        json!([{"type": "web_search_20250305", "name": "web_search"}])
    );
}

#[tokio::test]
async fn gemini_grounds_on_google_search_and_reports_its_queries_and_pages() {
    let m = mock(json!([searching_step()])).await;
    let p = Gemini::new(dispatch_http::fallback(), Some(m.gemini_base_url()), None);
    let r = call(&p, &request("gemini-2.5-flash", true))
        .await
        .expect("an answer");
    assert_eq!(r.text, "Rust 1.95 shipped in April.");
    assert_eq!(r.searches, expected(true));
    let body = &m.requests()[0].body;
    assert_eq!(body["tools"], json!([{"google_search": {}}]));
}

/// A long turn of hosted searches that Anthropic paused (`stop_reason:
/// pause_turn`) is continued by sending its content back: one call of ours,
/// one answer with the text and searches of both parts and the tokens of
/// both requests.
#[tokio::test]
async fn anthropic_continues_a_paused_turn_by_sending_its_content_back() {
    let paused = json!({"kind": "text", "text": "Looking it up. ", "paused": true,
        "usage": {"input_tokens": 100, "output_tokens": 10},
        "searches": [{"query": "rust 1.95 release date", "results": [
            {"url": "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/", "title": "Announcing Rust 1.95.0"}]}]});
    let rest = json!({"kind": "text", "text": "Rust 1.95 shipped in April.",
        "usage": {"input_tokens": 300, "output_tokens": 20},
        "searches": [{"query": "rust release schedule", "results": [
            {"url": "https://releases.rs/", "title": "Rust Release Schedule"}]}]});
    let m = mock(json!([paused, rest])).await;
    let p = Anthropic::new(
        dispatch_http::fallback(),
        Some(m.base_url()),
        Some("k".into()),
    );
    let mut ex = Exchange::default();
    let mut streamed = String::new();
    let mut on = |d: Delta<'_>| {
        if let Delta::Text(t) = d {
            streamed.push_str(t);
        }
        Flow::Continue
    };
    let r = p
        .stream(&request("claude-sonnet-4-5", true), &mut on, &mut ex)
        .await
        .expect("an answer");
    assert_eq!(r.text, "Looking it up. Rust 1.95 shipped in April.");
    assert_eq!(streamed, r.text, "both parts stream to the caller");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(r.searches, expected(false));
    let usage = r.usage.expect("usage");
    assert_eq!((usage.input_tokens, usage.output_tokens), (400, 30));

    let seen = m.requests();
    assert_eq!(seen.len(), 2, "one continuation");
    let first = seen[0].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    let second = seen[1].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(second[..1], first[..], "the conversation is kept");
    let sent_back = &second[1];
    assert_eq!(sent_back["role"], "assistant");
    let kinds: Vec<&str> = sent_back["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(kinds, ["server_tool_use", "web_search_tool_result", "text"]);
    let blocks = &sent_back["content"];
    assert_eq!(
        blocks[0]["input"],
        json!({"query": "rust 1.95 release date"})
    );
    assert_eq!(blocks[1]["tool_use_id"], blocks[0]["id"]);
    assert_eq!(
        blocks[1]["content"][0]["encrypted_content"], "mock",
        "the results go back as they came"
    );
    assert_eq!(blocks[2]["text"], "Looking it up. ");
    assert_eq!(seen[1].body["tools"], seen[0].body["tools"]);
    // The exchange keeps the first request and every answer.
    assert_eq!(ex.request_json(), seen[0].body);
    assert_eq!(ex.response_body.matches("event: message_stop").count(), 2);
}

/// A turn that is still paused after the most continuations one call makes
/// is the answer as it stands, its finish reason `pause_turn`.
#[tokio::test]
async fn anthropic_gives_up_continuing_after_eight_pauses() {
    let paused = json!({"kind": "text", "text": "more ", "paused": true});
    let m = mock(json!(vec![paused; 10])).await;
    let p = Anthropic::new(
        dispatch_http::fallback(),
        Some(m.base_url()),
        Some("k".into()),
    );
    let r = call(&p, &request("claude-sonnet-4-5", true))
        .await
        .expect("an answer");
    assert_eq!(m.requests().len(), 9, "the call and eight continuations");
    assert_eq!(r.text, "more ".repeat(9));
    assert_eq!(r.finish_reason, FinishReason::Other("pause_turn".into()));
    let last = m.requests()[8].body["messages"].clone();
    assert_eq!(
        last.as_array().map(Vec::len),
        Some(2),
        "every part goes back in one assistant message"
    );
}
