//! What each provider sends and how it reports a server that is not what
//! it expects, through the real HTTP client code against the scripted mock
//! model server on loopback: the output-token field by model family, base
//! URLs with or without their `/v1`, errors that name the URL, and a 200
//! that is not a stream (a captive portal's page).

use dispatch_agent::anthropic::Anthropic;
use dispatch_agent::openai::OpenAi;
use dispatch_agent::{
    Delta, Exchange, Flow, Message, ModelRequest, ModelResponse, Provider, ProviderError,
    ProviderKind,
};
use dispatch_test_support::mock::{MockServer, Script};
use serde_json::{Value, json};

async fn mock(steps: Value) -> MockServer {
    let script: Script = serde_json::from_value(json!({ "steps": steps })).expect("script");
    MockServer::start(script).await.expect("mock starts")
}

fn request(model: &str, max: Option<u64>) -> ModelRequest<'static> {
    ModelRequest {
        model: model.into(),
        system: "".into(),
        messages: std::borrow::Cow::Owned(vec![Message::user("hi")]),
        tools: vec![].into(),
        max_output_tokens: max,
        reasoning: None,
        web_search: false,
    }
}

async fn call(p: &dyn Provider, req: &ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
    let mut ex = Exchange::default();
    let mut on = |_: Delta<'_>| Flow::Continue;
    p.stream(req, &mut on, &mut ex).await
}

fn openai(kind: ProviderKind, base: String) -> OpenAi {
    OpenAi::new(
        kind,
        dispatch_http::fallback(),
        Some(base),
        Some("k".into()),
    )
}

#[tokio::test]
async fn reasoning_models_are_sent_max_completion_tokens_and_others_max_tokens() {
    let m = mock(json!([])).await;
    let p = openai(ProviderKind::Openai, m.base_url());
    for model in ["o3", "o4-mini", "gpt-5-mini", "gpt-4o-mini"] {
        call(&p, &request(model, Some(64))).await.expect("answer");
    }
    let fields: Vec<(Value, Value)> = m
        .requests()
        .iter()
        .map(|r| {
            (
                r.body["max_completion_tokens"].clone(),
                r.body["max_tokens"].clone(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            (json!(64), Value::Null),
            (json!(64), Value::Null),
            (json!(64), Value::Null),
            (Value::Null, json!(64)),
        ]
    );
}

#[tokio::test]
async fn a_base_url_without_its_version_segment_reaches_the_endpoint() {
    let m = mock(json!([])).await;
    let bare = format!("http://{}", m.addr());
    let a = Anthropic::new(
        dispatch_http::fallback(),
        Some(bare.clone()),
        Some("k".into()),
    );
    call(&a, &request("claude-haiku-4-5", None))
        .await
        .expect("anthropic without /v1");
    let o = openai(ProviderKind::OpenaiCompatible, format!("{bare}/"));
    call(&o, &request("llama3.2", None))
        .await
        .expect("openai-compatible without /v1");
    let full = openai(
        ProviderKind::OpenaiCompatible,
        format!("{bare}/v1/chat/completions"),
    );
    call(&full, &request("llama3.2", None))
        .await
        .expect("the full endpoint pasted as BASE_URL");
    let paths: Vec<String> = m.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/messages",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
}

#[tokio::test]
async fn an_error_status_names_the_url_that_answered_it() {
    let m = mock(json!([])).await;
    let wrong = format!("http://{}/v2", m.addr());
    let a = Anthropic::new(dispatch_http::fallback(), Some(wrong.clone()), None);
    let err = call(&a, &request("claude-haiku-4-5", None))
        .await
        .expect_err("no /v2 on the mock");
    let text = err.to_string();
    assert!(
        matches!(err, ProviderError::Refused { status: 404, .. }),
        "{err:?}"
    );
    assert!(text.contains(&format!("POST {wrong}/messages")), "{text}");
    assert!(text.contains("BASE_URL"), "{text}");
}

#[tokio::test]
async fn a_200_that_is_not_a_stream_names_the_url_content_type_and_body() {
    for anthropic in [false, true] {
        let m = mock(json!([{"kind": "page"}])).await;
        let p: Box<dyn Provider> = if anthropic {
            Box::new(Anthropic::new(
                dispatch_http::fallback(),
                Some(m.base_url()),
                None,
            ))
        } else {
            Box::new(openai(ProviderKind::Openai, m.base_url()))
        };
        let err = call(&*p, &request("m", None))
            .await
            .expect_err("an HTML page is no answer");
        let ProviderError::Protocol(text) = &err else {
            panic!("a protocol error, not {err:?}")
        };
        let endpoint = if anthropic {
            "messages"
        } else {
            "chat/completions"
        };
        assert!(
            text.contains(&format!("POST {}/{endpoint}", m.base_url())),
            "{text}"
        );
        assert!(text.contains("`text/html; charset=utf-8`"), "{text}");
        assert!(
            text.contains("<!DOCTYPE html><html><head><title>Sign in"),
            "{text}"
        );
        assert!(
            !text.contains("cut"),
            "not reported as a cut stream: {text}"
        );
        assert!(!err.retryable());
    }
}
