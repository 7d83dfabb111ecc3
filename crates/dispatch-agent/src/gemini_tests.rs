use super::*;
use crate::openai::tests::events;
use crate::provider::{Effort, Reasoning, ToolSpec};

async fn assemble(recorded: &str) -> (Result<ModelResponse, ProviderError>, Vec<String>) {
    let mut c = Chunks::new("models/gemini-2.5-flash");
    let mut seen = Vec::new();
    for data in events(recorded).await {
        let r = c.feed(&data, &mut |d| {
            seen.push(match d {
                Delta::Text(t) => format!("text:{t}"),
                Delta::ToolArguments(a) => format!("args:{a}"),
            });
            Flow::Continue
        });
        if let Err(e) = r {
            return (Err(e), seen);
        }
    }
    (c.finish(), seen)
}

/// A text answer as `streamGenerateContent?alt=sse` sends it (with thinking tokens).
const TEXT: &str = r#"data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 1,"totalTokenCount": 31,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 9}],"thoughtsTokenCount": 21},"modelVersion": "gemini-2.5-flash","responseId": "r1"}

data: {"candidates": [{"content": {"parts": [{"text": "lo ☃"}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 3,"totalTokenCount": 33,"thoughtsTokenCount": 21},"modelVersion": "gemini-2.5-flash","responseId": "r1"}

"#;

/// Two function calls in one chunk, the first signed, no ids.
const TOOLS: &str = r#"data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"location": "Paris"}},"thoughtSignature": "c2lnMQ=="},{"functionCall": {"name": "get_time","args": {}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 50,"candidatesTokenCount": 20,"totalTokenCount": 70},"modelVersion": "gemini-2.5-flash","responseId": "r2"}

"#;

#[tokio::test]
async fn a_text_stream_assembles_counting_thinking_tokens_as_output() {
    let (r, seen) = assemble(TEXT).await;
    let r = r.expect("complete");
    assert_eq!(r.text, "Hello ☃");
    assert_eq!(r.model, "gemini-2.5-flash");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input_tokens: 9,
            output_tokens: 24
        })
    );
    assert_eq!(seen, ["text:Hel", "text:lo ☃"]);
}

#[tokio::test]
async fn function_calls_get_unique_ids_keep_their_signature_and_finish_as_tool_calls() {
    let (r, seen) = assemble(TOOLS).await;
    let r = r.expect("complete");
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    let mut weather = ToolCall::new("call_r2_0", "get_weather", r#"{"location":"Paris"}"#);
    weather.signature = Some("c2lnMQ==".into());
    assert_eq!(
        r.tool_calls,
        [weather, ToolCall::new("call_r2_1", "get_time", "{}")]
    );
    assert_eq!(seen, [r#"args:{"location":"Paris"}"#, "args:{}"]);
}

#[tokio::test]
async fn max_tokens_is_length_a_cut_stream_and_an_error_chunk_are_errors() {
    let long = TEXT.replace("\"STOP\"", "\"MAX_TOKENS\"");
    assert_eq!(
        assemble(&long).await.0.expect("ends").finish_reason,
        FinishReason::Length
    );
    let cut = TEXT.split("\n\n").next().expect("first chunk").to_string() + "\n\n";
    let err = assemble(&cut).await.0.expect_err("cut");
    assert!(err.to_string().contains("without a finishReason"), "{err}");
    let error = r#"data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}

"#;
    let err = assemble(error).await.0.expect_err("error");
    assert!(err.retryable(), "{err}");
    let blocked = r#"data: {"promptFeedback": {"blockReason": "SAFETY"},"usageMetadata": {"promptTokenCount": 4,"totalTokenCount": 4}}

"#;
    let r = assemble(blocked).await.0.expect("a blocked prompt ends");
    assert_eq!(
        r.finish_reason,
        FinishReason::Other("blocked: safety".into())
    );
}

#[test]
fn the_body_has_contents_system_instruction_declarations_and_thinking_config() {
    let p = Gemini::new(
        dispatch_http::fallback(),
        Some("https://generativelanguage.googleapis.com".into()),
        None,
    );
    assert_eq!(
        p.url("gemini-2.5-flash"),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let pasted = Gemini::new(
        dispatch_http::fallback(),
        Some("http://127.0.0.1:9/v1beta/models/gemini-2.5-pro:generateContent".into()),
        None,
    );
    assert_eq!(
        pasted.url("models/gemini-2.5-pro"),
        "http://127.0.0.1:9/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    let mut signed = ToolCall::new("c1", "w", "{\"a\":1}");
    signed.signature = Some("sig".into());
    let req = ModelRequest {
        model: "gemini-2.5-flash".into(),
        system: "Be brief.".into(),
        messages: std::borrow::Cow::Owned(vec![
            Message::user("weather and time?"),
            Message::assistant("", vec![signed, ToolCall::new("c2", "t", "not json")]),
            Message::tool_result("c1", "sunny", false),
            Message::tool_result("c2", "no clock", true),
        ]),
        tools: vec![ToolSpec {
            name: "w".into(),
            description: "weather".into(),
            parameters: json!({"type": "object", "additionalProperties": false}).into(),
        }]
        .into(),
        max_output_tokens: Some(300),
        reasoning: Some(Reasoning {
            effort: Some(Effort::Low),
            budget_tokens: None,
        }),
        web_search: false,
    };
    assert_eq!(
        p.body(&req),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "weather and time?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "w", "args": {"a": 1}}, "thoughtSignature": "sig"},
                    {"functionCall": {"name": "t", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "w", "response": {"result": "sunny"}}},
                    {"functionResponse": {"name": "t", "response": {"error": "no clock"}}},
                ]},
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [{"name": "w", "description": "weather",
                "parametersJsonSchema": {"type": "object", "additionalProperties": false}}]}],
            "generationConfig": {"maxOutputTokens": 300, "thinkingConfig": {"thinkingBudget": 1024}},
        })
    );
}
