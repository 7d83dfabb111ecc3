use super::*;
use crate::provider::{Message, ToolSpec};
use crate::sse::StreamParser;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

/// The `data` of each event in a recorded SSE byte stream, split at odd places.
pub(crate) async fn events(recorded: &str) -> Vec<String> {
    let bytes = recorded.as_bytes();
    let pieces: Vec<Result<Vec<u8>, std::convert::Infallible>> =
        bytes.chunks(37).map(|c| Ok(c.to_vec())).collect();
    futures_util::stream::iter(pieces)
        .eventsource()
        .map(|e| e.expect("valid SSE").data)
        .collect()
        .await
}

async fn assemble(recorded: &str) -> (Result<ModelResponse, ProviderError>, Vec<String>) {
    let mut c = Chunks::new("gpt-4o-mini");
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

const TEXT: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"lo ☃"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22}}

data: [DONE]

"#;

const TOOLS: &str = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"loc"}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ation\": \"Paris\"}"}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"choices":[],"usage":{"prompt_tokens":80,"completion_tokens":24,"total_tokens":104}}

data: [DONE]

"#;

#[tokio::test]
async fn streamed_text_and_usage_assemble() {
    let (r, seen) = assemble(TEXT).await;
    let r = r.expect("a whole answer");
    assert_eq!(r.text, "Hello ☃");
    assert_eq!(r.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input_tokens: 19,
            output_tokens: 3
        })
    );
    assert_eq!(seen, ["text:Hel", "text:lo ☃"]);
}

#[tokio::test]
async fn parallel_tool_calls_arriving_in_fragments_reassemble() {
    let (r, seen) = assemble(TOOLS).await;
    let r = r.expect("a whole answer");
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.tool_calls.len(), 2);
    assert_eq!(r.tool_calls[0].id, "call_a");
    assert_eq!(r.tool_calls[0].name, "get_weather");
    assert_eq!(r.tool_calls[0].arguments, r#"{"location": "Paris"}"#);
    assert_eq!(r.tool_calls[1].arguments, "{}");
    assert!(seen.iter().all(|s| s.starts_with("args:")));
    assert_eq!(r.usage.map(|u| u.output_tokens), Some(24));
}

#[tokio::test]
async fn a_cut_stream_and_non_json_data_are_protocol_errors() {
    let cut: String = TEXT.split("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},").next().expect("head").to_string();
    let (r, _) = assemble(&cut).await;
    assert!(
        matches!(r, Err(ProviderError::Protocol(ref m)) if m.contains("cut")),
        "{r:?}"
    );
    let (r, _) = assemble("data: <html>bad gateway</html>\n\n").await;
    assert!(
        matches!(r, Err(ProviderError::Protocol(ref m)) if m.contains("not JSON")),
        "{r:?}"
    );
    let (r, _) = assemble("data: {\"error\":{\"message\":\"overloaded\"}}\n\n").await;
    assert!(matches!(r, Err(ProviderError::Server { .. })), "{r:?}");
}

#[test]
fn the_request_body_carries_system_tools_calls_and_results() {
    let p = OpenAi::new(
        ProviderKind::Openai,
        dispatch_http::fallback(),
        None,
        Some("sk-x".into()),
    );
    assert_eq!(p.url(), "https://api.openai.com/v1/chat/completions");
    let req = ModelRequest {
        model: "gpt-4o".into(),
        system: "Be brief.".into(),
        messages: std::borrow::Cow::Owned(vec![
            Message::user("weather?"),
            Message::assistant(
                "",
                vec![ToolCall {
                    id: "c1".into(),
                    name: "w".into(),
                    arguments: "{\"a\":1}".into(),
                    signature: None,
                }],
            ),
            Message::tool_result("c1", "sunny", false),
        ]),
        tools: vec![ToolSpec {
            name: "w".into(),
            description: "weather".into(),
            parameters: json!({"type": "object"}).into(),
        }]
        .into(),
        max_output_tokens: Some(100),
        reasoning: None,
        web_search: false,
    };
    let b = p.body(&req);
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        b["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert_eq!(b["messages"][2]["content"], Value::Null);
    assert_eq!(
        b["messages"][3],
        json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
    );
    assert_eq!(b["tools"][0]["function"]["name"], "w");
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["max_tokens"], 100);
    assert!(
        !b.to_string().contains("sk-x"),
        "the key is never in the body"
    );
}
