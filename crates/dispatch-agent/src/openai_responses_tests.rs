use super::*;
use crate::openai::tests::events;
use crate::provider::{Effort, Message, Reasoning, ToolSpec};
use crate::sse::StreamParser;

async fn assemble(recorded: &str) -> (Result<ModelResponse, ProviderError>, Vec<String>) {
    let mut e = Events::new("gpt-5-mini");
    let mut seen = Vec::new();
    for data in events(recorded).await {
        let r = e.feed(&data, &mut |d| {
            seen.push(match d {
                Delta::Text(t) => format!("text:{t}"),
                Delta::ToolArguments(a) => format!("args:{a}"),
            });
            Flow::Continue
        });
        if let Err(err) = r {
            return (Err(err), seen);
        }
    }
    (e.finish(), seen)
}

/// A text answer as the Responses API streams it (a reasoning item first).
const TEXT: &str = r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-5-mini-2025-08-07","output":[],"usage":null}}

event: response.in_progress
data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-5-mini-2025-08-07","output":[]}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":4,"output_index":1,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}

event: response.content_part.added
data: {"type":"response.content_part.added","sequence_number":5,"item_id":"msg_1","output_index":1,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":6,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hel"}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"lo ☃"}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":8,"item_id":"msg_1","output_index":1,"content_index":0,"text":"Hello ☃"}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":9,"output_index":1,"item":{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"text":"Hello ☃"}],"role":"assistant"}}

event: response.completed
data: {"type":"response.completed","sequence_number":10,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-5-mini-2025-08-07","output":[],"usage":{"input_tokens":19,"input_tokens_details":{"cached_tokens":0},"output_tokens":75,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":94}}}

"#;

/// Two function calls, their arguments in pieces.
const TOOLS: &str = r#"event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"fc_1","type":"function_call","status":"in_progress","arguments":"","call_id":"call_a","name":"get_weather"}}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":2,"item_id":"fc_1","output_index":0,"delta":"{\"loc"}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"fc_2","type":"function_call","status":"in_progress","arguments":"","call_id":"call_b","name":"get_time"}}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":4,"item_id":"fc_1","output_index":0,"delta":"ation\": \"Paris\"}"}

event: response.function_call_arguments.done
data: {"type":"response.function_call_arguments.done","sequence_number":5,"item_id":"fc_1","output_index":0,"arguments":"{\"location\": \"Paris\"}"}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":6,"output_index":0,"item":{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"location\": \"Paris\"}","call_id":"call_a","name":"get_weather"}}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":7,"output_index":1,"item":{"id":"fc_2","type":"function_call","status":"completed","arguments":"{}","call_id":"call_b","name":"get_time"}}

event: response.completed
data: {"type":"response.completed","sequence_number":8,"response":{"id":"resp_2","status":"completed","model":"gpt-4.1","usage":{"input_tokens":50,"output_tokens":20,"total_tokens":70}}}

"#;

#[tokio::test]
async fn a_text_stream_assembles_with_its_usage_and_model() {
    let (r, seen) = assemble(TEXT).await;
    let r = r.expect("complete");
    assert_eq!(r.text, "Hello ☃");
    assert_eq!(r.model, "gpt-5-mini-2025-08-07");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input_tokens: 19,
            output_tokens: 75
        })
    );
    assert_eq!(seen, ["text:Hel", "text:lo ☃"]);
}

#[tokio::test]
async fn function_calls_assemble_from_their_argument_deltas() {
    let (r, seen) = assemble(TOOLS).await;
    let r = r.expect("complete");
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        r.tool_calls,
        [
            ToolCall::new("call_a", "get_weather", "{\"location\": \"Paris\"}"),
            ToolCall::new("call_b", "get_time", "{}"),
        ]
    );
    assert_eq!(seen, ["args:{\"loc", "args:ation\": \"Paris\"}"]);
}

#[tokio::test]
async fn an_incomplete_response_is_cut_for_length_and_a_stream_without_its_end_is_an_error() {
    let incomplete = r#"data: {"type":"response.output_text.delta","output_index":0,"delta":"On i"}

data: {"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":5,"output_tokens":8}}}

"#;
    let (r, _) = assemble(incomplete).await;
    assert_eq!(r.expect("ends").finish_reason, FinishReason::Length);
    let cut = TEXT
        .split("event: response.completed")
        .next()
        .expect("head");
    let (r, _) = assemble(cut).await;
    let err = r.expect_err("cut");
    assert!(
        err.to_string().contains("without response.completed"),
        "{err}"
    );
    let failed = r#"data: {"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"The model had an error"}}}

"#;
    let (r, _) = assemble(failed).await;
    assert!(
        matches!(r, Err(ProviderError::Server { ref message, .. }) if message == "The model had an error"),
        "{r:?}"
    );
}

#[test]
fn the_body_carries_instructions_input_items_tools_and_reasoning() {
    let p = OpenAiResponses::new(dispatch_http::fallback(), None, Some("sk-x".into()));
    assert_eq!(p.url(), "https://api.openai.com/v1/responses");
    let req = ModelRequest {
        model: "o4-mini".into(),
        system: "Be brief.".into(),
        messages: std::borrow::Cow::Owned(vec![
            Message::user("weather?"),
            Message::assistant("Let me look.", vec![ToolCall::new("c1", "w", "{\"a\":1}")]),
            Message::tool_result("c1", "sunny", false),
        ]),
        tools: vec![ToolSpec {
            name: "w".into(),
            description: "weather".into(),
            parameters: json!({"type": "object"}).into(),
        }]
        .into(),
        max_output_tokens: Some(300),
        reasoning: Some(Reasoning {
            effort: Some(Effort::High),
            budget_tokens: None,
        }),
        web_search: false,
    };
    assert_eq!(
        p.body(&req),
        json!({
            "model": "o4-mini",
            "instructions": "Be brief.",
            "stream": true,
            "input": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "tools": [{"type": "function", "name": "w", "description": "weather", "parameters": {"type": "object"}}],
            "max_output_tokens": 300,
            "reasoning": {"effort": "high"},
        })
    );
}
