//! Gemini's own API and OpenAI's Responses API, and each provider's
//! reasoning fields, through the real HTTP client code against the scripted
//! mock model server on loopback speaking those wire formats: a tool round
//! trip, usage, the key header, errors in the provider's shape, and what
//! `REASONING` puts on each wire.

use dispatch_agent::anthropic::Anthropic;
use dispatch_agent::gemini::Gemini;
use dispatch_agent::openai::OpenAi;
use dispatch_agent::openai_responses::OpenAiResponses;
use dispatch_agent::{
    Delta, Effort, Exchange, FinishReason, Flow, Message, ModelRequest, ModelResponse, Provider,
    ProviderError, ProviderKind, Reasoning, Thinking, TokenUsage, ToolSpec,
};
use dispatch_test_support::mock::{MockServer, Received, Script};
use serde_json::{Value, json};

async fn mock(steps: Value) -> MockServer {
    let script: Script = serde_json::from_value(json!({ "steps": steps })).expect("script");
    MockServer::start(script).await.expect("mock starts")
}

fn request(model: &str) -> ModelRequest<'static> {
    ModelRequest {
        model: model.into(),
        system: "Be brief.".into(),
        messages: std::borrow::Cow::Owned(vec![Message::user("where is order 12345?")]),
        tools: vec![ToolSpec {
            name: "lookup".into(),
            description: "Looks an order up".into(),
            parameters: json!({"type": "object", "properties": {"order": {"type": "string"}}})
                .into(),
        }]
        .into(),
        max_output_tokens: None,
        reasoning: None,
        web_search: false,
    }
}

async fn call(
    p: &dyn Provider,
    req: &ModelRequest<'_>,
) -> (Result<ModelResponse, ProviderError>, Vec<String>) {
    let mut ex = Exchange::default();
    let mut seen = Vec::new();
    let mut on = |d: Delta<'_>| {
        seen.push(match d {
            Delta::Text(t) => format!("text:{t}"),
            Delta::ToolArguments(a) => format!("args:{a}"),
        });
        Flow::Continue
    };
    let r = p.stream(req, &mut on, &mut ex).await;
    (r, seen)
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The steps of one tool round: a call of `lookup`, then the answer.
fn tool_round() -> Value {
    json!([
        {"kind": "tool_calls", "calls": [{"name": "lookup", "arguments": {"order": "12345"}}],
         "usage": {"input_tokens": 30, "output_tokens": 7}},
        {"kind": "text", "text": "It ships tomorrow.", "usage": {"input_tokens": 50, "output_tokens": 5}},
    ])
}

/// Runs a tool round trip through `p`: the call, its result sent back, the answer.
async fn round_trip(p: &dyn Provider, model: &str) -> (ModelResponse, ModelResponse) {
    let mut req = request(model);
    let (first, seen) = call(p, &req).await;
    let first = first.expect("a tool call");
    assert_eq!(first.finish_reason, FinishReason::ToolCalls, "{first:?}");
    assert_eq!(first.tool_calls.len(), 1);
    assert_eq!(first.tool_calls[0].name, "lookup");
    let args: Value = serde_json::from_str(&first.tool_calls[0].arguments).expect("json args");
    assert_eq!(args, json!({"order": "12345"}));
    assert!(seen.iter().any(|s| s.starts_with("args:")), "{seen:?}");
    let id = first.tool_calls[0].id.clone();
    req.messages
        .to_mut()
        .push(Message::assistant("", first.tool_calls.clone()));
    req.messages
        .to_mut()
        .push(Message::tool_result(id, "ships tomorrow", false));
    let (second, seen) = call(p, &req).await;
    let second = second.expect("an answer");
    assert_eq!(second.text, "It ships tomorrow.");
    assert_eq!(second.finish_reason, FinishReason::Stop);
    assert!(seen.iter().all(|s| s.starts_with("text:")), "{seen:?}");
    (first, second)
}

#[tokio::test]
async fn gemini_calls_a_tool_and_answers_over_stream_generate_content() {
    let m = mock(tool_round()).await;
    let g = Gemini::new(
        dispatch_http::fallback(),
        Some(format!("http://{}", m.addr())),
        Some("g-key".into()),
    );
    let (first, second) = round_trip(&g, "gemini-2.5-flash").await;
    assert_eq!(
        first.usage,
        Some(TokenUsage {
            input_tokens: 30,
            output_tokens: 7
        })
    );
    assert_eq!(second.model, "gemini-2.5-flash");
    let reqs = m.requests();
    assert_eq!(
        reqs[0].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(header(&reqs[0], "x-goog-api-key"), Some("g-key"));
    assert_eq!(header(&reqs[0], "authorization"), None);
    let body = &reqs[1].body;
    assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"],
        "lookup"
    );
    let roles: Vec<&str> = body["contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|c| c["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["user", "model", "user"]);
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "lookup", "response": {"result": "ships tomorrow"}})
    );
}

#[tokio::test]
async fn gemini_errors_come_in_googles_shape_and_are_classified() {
    let m = mock(json!([
        {"kind": "error", "status": 429, "retry_after": 3, "message": "Resource has been exhausted (e.g. check quota)."},
        {"kind": "error", "status": 400, "message": "API key not valid. Please pass a valid API key."},
        {"kind": "cut", "text_before": "half an ans"},
    ]))
    .await;
    let g = Gemini::new(dispatch_http::fallback(), Some(m.gemini_base_url()), None);
    let (r, _) = call(&g, &request("gemini-2.5-pro")).await;
    match r {
        Err(ProviderError::RateLimited {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after.map(|d| d.as_secs()), Some(3));
            assert!(
                message.starts_with("Resource has been exhausted"),
                "{message}"
            );
            assert!(message.contains(":streamGenerateContent"), "{message}");
        }
        other => panic!("rate limited, not {other:?}"),
    }
    let (r, _) = call(&g, &request("gemini-2.5-pro")).await;
    assert!(
        matches!(&r, Err(ProviderError::Refused { status: 400, message }) if message.starts_with("API key not valid")),
        "{r:?}"
    );
    let (r, seen) = call(&g, &request("gemini-2.5-pro")).await;
    assert!(matches!(r, Err(ProviderError::Protocol(_))), "{r:?}");
    assert_eq!(seen.concat(), "text:halftext: an text:ans");
}

#[tokio::test]
async fn the_responses_api_calls_a_tool_and_answers_with_function_call_output() {
    let m = mock(tool_round()).await;
    let p = OpenAiResponses::new(
        dispatch_http::fallback(),
        Some(m.base_url()),
        Some("sk-r".into()),
    );
    let (first, second) = round_trip(&p, "gpt-5-mini").await;
    assert_eq!(
        second.usage,
        Some(TokenUsage {
            input_tokens: 50,
            output_tokens: 5
        })
    );
    assert!(first.tool_calls[0].id.starts_with("call_mock"), "{first:?}");
    let reqs = m.requests();
    assert_eq!(reqs[0].path, "/v1/responses");
    assert_eq!(header(&reqs[0], "authorization"), Some("Bearer sk-r"));
    let body = &reqs[1].body;
    assert_eq!(body["instructions"], "Be brief.");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["name"], "lookup");
    let input = body["input"].as_array().expect("input");
    assert_eq!(input[1]["type"], "function_call");
    assert_eq!(
        input[2],
        json!({"type": "function_call_output", "call_id": first.tool_calls[0].id, "output": "ships tomorrow"})
    );
}

#[tokio::test]
async fn a_responses_answer_cut_at_max_output_tokens_finishes_for_length() {
    let m = mock(json!([{"kind": "text", "text": "On its w", "truncated": true}])).await;
    let p = OpenAiResponses::new(dispatch_http::fallback(), Some(m.base_url()), None);
    let mut req = request("gpt-4.1");
    req.max_output_tokens = Some(8);
    let (r, _) = call(&p, &req).await;
    let r = r.expect("incomplete is an answer");
    assert_eq!(r.finish_reason, FinishReason::Length);
    assert_eq!(r.text, "On its w");
    assert_eq!(m.requests()[0].body["max_output_tokens"], 8);
}

#[tokio::test]
async fn reasoning_goes_into_each_providers_own_fields() {
    let m = mock(json!([])).await;
    let client = reqwest::Client::new;
    let providers: Vec<(&str, Box<dyn Provider>)> = vec![
        (
            "o4-mini",
            Box::new(OpenAi::new(
                ProviderKind::OpenaiChat,
                client(),
                Some(m.base_url()),
                None,
            )),
        ),
        (
            "o4-mini",
            Box::new(OpenAiResponses::new(client(), Some(m.base_url()), None)),
        ),
        (
            "claude-sonnet-4-5",
            Box::new(Anthropic::new(client(), Some(m.base_url()), None)),
        ),
        (
            "gemini-2.5-flash",
            Box::new(Gemini::new(client(), Some(m.gemini_base_url()), None)),
        ),
    ];
    for (model, p) in &providers {
        let mut req = request(model);
        req.max_output_tokens = Some(1000);
        req.reasoning = Some(Reasoning {
            effort: Some(Effort::Medium),
            budget_tokens: None,
        });
        call(p.as_ref(), &req).await.0.expect("an answer");
    }
    let bodies: Vec<Value> = m.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies[0]["reasoning_effort"], "medium");
    assert_eq!(bodies[1]["reasoning"], json!({"effort": "medium"}));
    assert_eq!(
        bodies[2]["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(
        bodies[2]["max_tokens"], 9192,
        "max_tokens stays above the budget"
    );
    assert_eq!(
        bodies[3]["generationConfig"],
        json!({"maxOutputTokens": 1000, "thinkingConfig": {"thinkingBudget": 8192}})
    );
    // Without REASONING, none of those fields is sent.
    for (model, p) in &providers {
        call(p.as_ref(), &request(model))
            .await
            .0
            .expect("an answer");
    }
    for body in m.requests().into_iter().skip(4).map(|r| r.body) {
        for field in ["reasoning_effort", "reasoning", "thinking"] {
            assert!(body.get(field).is_none(), "{field}: {body}");
        }
        assert!(body.get("generationConfig").is_none(), "{body}");
    }
}

#[tokio::test]
async fn anthropic_gets_its_signed_thinking_back_and_no_thinking_after_another_models_tool_round() {
    let m = mock(json!([])).await;
    let a = Anthropic::new(dispatch_http::fallback(), Some(m.base_url()), None);
    let mut call_msg = Message::assistant(
        "",
        vec![dispatch_agent::ToolCall::new("t1", "lookup", "{}")],
    );
    let mut req = request("claude-sonnet-4-5");
    req.reasoning = Some(Reasoning {
        effort: None,
        budget_tokens: Some(2048),
    });
    req.messages.to_mut().push(call_msg.clone());
    req.messages
        .to_mut()
        .push(Message::tool_result("t1", "ships tomorrow", false));
    // The previous round came from a model that left no signed thinking
    // (a fallback): thinking is off for this call, as Anthropic requires.
    call(&a, &req).await.0.expect("an answer");
    call_msg.thinking = vec![Thinking {
        text: "Look the order up.".into(),
        signature: Some("sig-1".into()),
        redacted: false,
    }];
    req.messages.to_mut()[1] = call_msg;
    call(&a, &req).await.0.expect("an answer");
    let bodies: Vec<Value> = m.requests().into_iter().map(|r| r.body).collect();
    assert!(bodies[0].get("thinking").is_none(), "{}", bodies[0]);
    assert_eq!(bodies[0]["max_tokens"], 4096);
    assert_eq!(bodies[1]["thinking"]["budget_tokens"], 2048);
    assert_eq!(bodies[1]["max_tokens"], 4096 + 2048);
    assert_eq!(
        bodies[1]["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "Look the order up.", "signature": "sig-1"})
    );
}
