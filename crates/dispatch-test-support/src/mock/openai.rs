//! The OpenAI Chat Completions wire format (`POST /v1/chat/completions`):
//! `chat.completion.chunk` events ending in `data: [DONE]`, the whole
//! `chat.completion` object, and the `{"error": {…}}` body.

use serde_json::{Value, json};

use super::answer::{Answer, End, Finish, Frame, Meta};

fn finish_reason(end: End) -> &'static str {
    match end {
        End::Finish(Finish::ToolCalls) => "tool_calls",
        End::Finish(Finish::Length) => "length",
        End::Finish(Finish::Stop | Finish::Paused) | End::Stall | End::Cut => "stop",
    }
}

fn usage(a: &Answer) -> Value {
    let u = a.usage;
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// What a request that a real server would refuse lacks (`None`: it is fine).
pub(super) fn invalid(body: &Value) -> Option<String> {
    if !body["model"].is_string() {
        return Some("you must provide a model parameter".into());
    }
    if !body["messages"].is_array() {
        return Some("Missing required parameter: 'messages'.".into());
    }
    None
}

/// The streamed body: one `data:` line per chunk. With `include_usage`
/// (`stream_options.include_usage`) every chunk carries `"usage": null` and
/// a last chunk with no choices carries the usage, as the real API does.
pub(super) fn stream(a: &Answer, m: Meta<'_>, include_usage: bool) -> Vec<Frame> {
    let id = format!("chatcmpl-mock{}", m.seq);
    let chunk = |choices: Value, usage: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": m.created,
            "model": m.model, "system_fingerprint": "fp_mock", "choices": choices,
        });
        if include_usage {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    let delta = |delta: Value, finish: Value| {
        chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
            Value::Null,
        )
    };
    let content = if a.calls.is_empty() {
        json!("")
    } else {
        Value::Null
    };
    let mut out = vec![Frame::new(
        delta(
            json!({"role": "assistant", "content": content, "refusal": null}),
            Value::Null,
        ),
        false,
        0,
    )];
    for (i, t) in a.text.iter().enumerate() {
        out.push(Frame::new(
            delta(json!({"content": t}), Value::Null),
            true,
            a.text_delay(i),
        ));
    }
    for (i, call) in a.calls.iter().enumerate() {
        let head = json!({"tool_calls": [{"index": i, "id": call.id("call_mock", m.seq, i),
            "type": "function", "function": {"name": call.name, "arguments": ""}}]});
        out.push(Frame::new(delta(head, Value::Null), true, 0));
        for piece in &call.arguments {
            let d = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
            out.push(Frame::new(delta(d, Value::Null), true, a.chunk_delay_ms));
        }
    }
    if !matches!(a.end, End::Finish(_)) {
        return out;
    }
    out.push(Frame::new(
        delta(json!({}), json!(finish_reason(a.end))),
        false,
        0,
    ));
    if include_usage {
        out.push(Frame::new(chunk(json!([]), usage(a)), false, 0));
    }
    out.push(Frame::new("data: [DONE]\n\n".into(), false, 0));
    out
}

/// The whole (non-streamed) `chat.completion`.
pub(super) fn whole(a: &Answer, m: Meta<'_>) -> Value {
    let text = a.full_text();
    let mut message =
        json!({"role": "assistant", "content": text, "refusal": null, "annotations": []});
    if !a.calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = a
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"id": c.id("call_mock", m.seq, i), "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.concat()}})
            })
            .collect();
    }
    json!({
        "id": format!("chatcmpl-mock{}", m.seq), "object": "chat.completion",
        "created": m.created, "model": m.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(a.end)}],
        "usage": usage(a), "system_fingerprint": "fp_mock",
    })
}

/// The `{"error": {message, type, param, code}}` body for `status`.
pub(super) fn error(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        500.. => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::script::Step;

    fn meta() -> Meta<'static> {
        Meta {
            model: "gpt-x",
            seq: 4,
            created: 1,
        }
    }

    #[test]
    fn a_stream_is_role_text_finish_usage_then_done() {
        let a = Answer::plan(&Step::text("abcdef"), 3);
        let frames = stream(&a, meta(), true);
        let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
        assert_eq!(data.len(), 1 + 3 + 1 + 1 + 1);
        let first: Value = serde_json::from_str(
            data[0]
                .strip_prefix("data: ")
                .and_then(|d| d.strip_suffix("\n\n"))
                .expect("one data line"),
        )
        .expect("json");
        assert_eq!(
            first,
            json!({"id": "chatcmpl-mock4", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                "system_fingerprint": "fp_mock", "usage": null,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                    "logprobs": null, "finish_reason": null}]})
        );
        assert_eq!(data[6], "data: [DONE]\n\n");
        assert!(data[5].contains("\"choices\":[]") && data[5].contains("\"total_tokens\":5"));
        assert_eq!(
            frames.iter().map(|f| f.content).collect::<Vec<_>>(),
            [false, true, true, true, false, false, false]
        );
    }

    #[test]
    fn without_include_usage_no_chunk_mentions_usage() {
        let a = Answer::plan(&Step::text("abcdef"), 3);
        assert!(
            stream(&a, meta(), false)
                .iter()
                .all(|f| !f.data.contains("usage"))
        );
    }

    #[test]
    fn error_bodies_have_the_openai_shape() {
        assert_eq!(
            error(429, "slow down"),
            json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        );
        assert_eq!(error(503, "x")["error"]["type"], "server_error");
    }
}
