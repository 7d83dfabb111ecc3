use super::*;
use crate::openai::tests::events;
use crate::provider::ToolSpec;
use crate::sse::StreamParser;

async fn assemble(recorded: &str) -> Result<ModelResponse, ProviderError> {
    let mut e = Events::new("claude-haiku-4-5");
    for data in events(recorded).await {
        e.feed(&data, &mut |_| Flow::Continue)?;
    }
    e.finish()
}

const TOOL_USE: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[],"stop_reason":null,"usage":{"input_tokens":472,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

#[tokio::test]
async fn tool_use_blocks_and_usage_assemble() {
    let r = assemble(TOOL_USE).await.expect("a whole message");
    assert_eq!(r.text, "Let me check");
    assert_eq!(r.model, "claude-haiku-4-5-20251001");
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.tool_calls[0].id, "toolu_01");
    assert_eq!(
        r.tool_calls[0].arguments,
        r#"{"location": "San Francisco"}"#
    );
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input_tokens: 472,
            output_tokens: 89
        })
    );
}

#[tokio::test]
async fn a_stream_without_message_stop_or_with_an_error_event_fails() {
    let cut = TOOL_USE.split("event: message_delta").next().expect("head");
    assert!(
        matches!(assemble(cut).await, Err(ProviderError::Protocol(ref m)) if m.contains("message_stop"))
    );
    let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let e = assemble(overloaded).await.expect_err("an error event");
    assert!(e.retryable(), "{e:?}");
}

#[test]
fn tool_results_become_user_messages_and_roles_merge() {
    let p = Anthropic::new(
        dispatch_http::fallback(),
        Some("http://127.0.0.1:9/v1/".into()),
        Some("sk-ant".into()),
    );
    assert_eq!(p.url(), "http://127.0.0.1:9/v1/messages");
    let req = ModelRequest {
        model: "claude-haiku-4-5".into(),
        system: "Be brief.".into(),
        messages: std::borrow::Cow::Owned(vec![
            Message::user("weather and time?"),
            Message::assistant(
                "",
                vec![
                    ToolCall {
                        id: "t1".into(),
                        name: "w".into(),
                        arguments: "{\"a\":1}".into(),
                        signature: None,
                    },
                    ToolCall {
                        id: "t2".into(),
                        name: "t".into(),
                        arguments: "not json".into(),
                        signature: None,
                    },
                ],
            ),
            Message::tool_result("t1", "sunny", false),
            Message::tool_result("t2", "no clock", true),
        ]),
        tools: vec![ToolSpec {
            name: "w".into(),
            description: "weather".into(),
            parameters: json!({"type": "object"}).into(),
        }]
        .into(),
        max_output_tokens: None,
        reasoning: None,
        web_search: false,
    };
    let b = p.body(&req);
    assert_eq!(b["system"], "Be brief.");
    assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    let m = b["messages"].as_array().expect("messages");
    assert_eq!(m.len(), 3, "{b}");
    assert_eq!(m[1]["content"][0]["input"], json!({"a": 1}));
    assert_eq!(m[1]["content"][1]["input"], json!({}));
    assert_eq!(m[2]["role"], "user");
    assert_eq!(m[2]["content"].as_array().map(Vec::len), Some(2));
    assert_eq!(m[2]["content"][1]["is_error"], true);
    assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
    assert!(!b.to_string().contains("sk-ant"));
}

/// Extended thinking as Anthropic streams it: a signed thinking block, then
/// a tool call.
const THINKING: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":90,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants the weather; "}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"call get_weather."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":120}}

event: message_stop
data: {"type":"message_stop"}

"#;

#[tokio::test]
async fn thinking_blocks_are_kept_with_their_signatures_and_are_not_the_answer() {
    let r = assemble(THINKING).await.expect("complete");
    assert_eq!(r.text, "");
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        r.thinking,
        [
            Thinking {
                text: "The user wants the weather; call get_weather.".into(),
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()),
                redacted: false,
            },
            Thinking {
                text: "EmwKAhgBEgy3va3pzix".into(),
                signature: None,
                redacted: true,
            },
        ]
    );
    let mut said = Message::assistant("", r.tool_calls);
    said.thinking = r.thinking;
    let blocks = content_blocks(&said, true);
    assert_eq!(blocks[0]["type"], "thinking");
    assert_eq!(
        blocks[1],
        json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"})
    );
    assert_eq!(blocks[2]["type"], "tool_use");
    assert_eq!(
        content_blocks(&said, false).len(),
        1,
        "no thinking when it is off"
    );
}
