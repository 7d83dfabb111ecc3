//! Both providers, through their real HTTP client code, against the scripted
//! mock model server on loopback (which speaks the providers' wire formats).

use dispatch_agent::anthropic::Anthropic;
use dispatch_agent::openai::OpenAi;
use dispatch_agent::{
    Delta, Exchange, FinishReason, Flow, Message, ModelRequest, Provider, ProviderError,
    ProviderKind,
};
use dispatch_test_support::mock::{MockServer, Script};
use serde_json::json;

async fn mock(steps: serde_json::Value) -> MockServer {
    let script: Script = serde_json::from_value(json!({ "steps": steps })).expect("script");
    MockServer::start(script).await.expect("mock starts")
}

fn request() -> ModelRequest<'static> {
    ModelRequest {
        model: "m".into(),
        system: "be brief".into(),
        messages: std::borrow::Cow::Owned(vec![Message::user("hi")]),
        tools: vec![].into(),
        max_output_tokens: None,
        reasoning: None,
        web_search: false,
    }
}

async fn call(
    p: &dyn Provider,
) -> (
    Result<dispatch_agent::ModelResponse, ProviderError>,
    Vec<String>,
    Exchange,
) {
    let mut seen = Vec::new();
    let mut ex = Exchange::default();
    let mut on = |d: Delta<'_>| {
        seen.push(match d {
            Delta::Text(t) | Delta::ToolArguments(t) => t.to_string(),
        });
        Flow::Continue
    };
    let r = p.stream(&request(), &mut on, &mut ex).await;
    (r, seen, ex)
}

#[tokio::test]
async fn both_providers_stream_text_tool_calls_and_usage_from_the_mock() {
    let steps = json!([
        {"kind": "text", "text": "hello world", "chunks": 3, "usage": {"input_tokens": 9, "output_tokens": 2}},
        {"kind": "tool_calls", "calls": [{"name": "lookup", "arguments": {"q": "order 12345"}}], "arg_chunks": 4},
    ]);
    for anthropic in [false, true] {
        let m = mock(steps.clone()).await;
        let client = dispatch_http::fallback();
        let p: Box<dyn Provider> = if anthropic {
            Box::new(Anthropic::new(
                client,
                Some(m.base_url()),
                Some("k-1".into()),
            ))
        } else {
            Box::new(OpenAi::new(
                ProviderKind::Openai,
                client,
                Some(m.base_url()),
                Some("k-1".into()),
            ))
        };
        let (r, seen, ex) = call(&*p).await;
        let r = r.expect("text answer");
        assert_eq!(r.text, "hello world");
        assert_eq!(seen.len(), 3, "three fragments as they arrived");
        assert_eq!(
            r.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((9, 2))
        );
        assert_eq!(r.finish_reason, FinishReason::Stop);
        assert!(ex.first_token_ms.is_some());
        assert!(!String::from_utf8_lossy(&ex.request_body).contains("k-1"));
        let (r, seen, _) = call(&*p).await;
        let r = r.expect("tool answer");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.tool_calls[0].name, "lookup");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.tool_calls[0].arguments).expect("json"),
            json!({"q": "order 12345"})
        );
        assert!(seen.len() >= 2, "arguments arrived in pieces: {seen:?}");
        let got = m.requests();
        let key_header = if anthropic {
            "x-api-key"
        } else {
            "authorization"
        };
        assert!(
            got[0]
                .headers
                .iter()
                .any(|(k, v)| k == key_header && v.contains("k-1"))
        );
        // The body goes with its length, not chunked (reqwest streams it
        // rather than keeping a copy while the call waits).
        let header = |name: &str| {
            got[0]
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("transfer-encoding"), None, "{:?}", got[0].headers);
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a content-length");
        assert_eq!(
            length,
            serde_json::to_vec(&got[0].body).expect("json").len(),
            "the whole body, as sent"
        );
    }
}

#[tokio::test]
async fn errors_are_classified_from_the_wire() {
    let m = mock(json!([
        {"kind": "error", "status": 429, "retry_after": 2, "message": "slow down"},
        {"kind": "error", "status": 500, "message": "boom"},
        {"kind": "error", "status": 401, "message": "bad key"},
        {"kind": "garbage", "body": "<html>"},
        {"kind": "cut", "text_before": "half"},
    ]))
    .await;
    let p = OpenAi::new(
        ProviderKind::OpenaiCompatible,
        dispatch_http::fallback(),
        Some(m.base_url()),
        None,
    );
    let (r, _, ex) = call(&p).await;
    assert!(
        matches!(r, Err(ProviderError::RateLimited { retry_after: Some(d), .. }) if d.as_secs() == 2)
    );
    assert_eq!(ex.status, 429);
    assert!(matches!(
        call(&p).await.0,
        Err(ProviderError::Server { status: 500, .. })
    ));
    assert!(
        matches!(call(&p).await.0, Err(ProviderError::Refused { status: 401, ref message }) if message.starts_with("bad key (POST http://127.0.0.1:"))
    );
    assert!(matches!(call(&p).await.0, Err(ProviderError::Protocol(_))));
    assert!(matches!(call(&p).await.0, Err(ProviderError::Protocol(ref m)) if m.contains("cut")));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", closed.local_addr().expect("addr"));
    drop(closed);
    let p = OpenAi::new(
        ProviderKind::OpenaiCompatible,
        dispatch_http::fallback(),
        Some(url),
        None,
    );
    let err = call(&p).await.0.expect_err("nothing listens");
    assert!(
        matches!(err, ProviderError::Connect(_)) && err.retryable(),
        "{err:?}"
    );
}

#[tokio::test]
async fn aborting_a_stream_stops_reading_at_once() {
    let m = mock(
        json!([{"kind": "text", "text": "a b c d e f g h", "chunks": 8, "chunk_delay_ms": 20}]),
    )
    .await;
    let p = OpenAi::new(
        ProviderKind::Openai,
        dispatch_http::fallback(),
        Some(m.base_url()),
        None,
    );
    let mut n = 0;
    let mut ex = Exchange::default();
    let mut on = |_: Delta<'_>| {
        n += 1;
        if n == 2 { Flow::Abort } else { Flow::Continue }
    };
    let r = p.stream(&request(), &mut on, &mut ex).await;
    assert_eq!(r.expect_err("aborted"), ProviderError::Aborted);
    assert_eq!(n, 2);
}
