//! The two wire formats the mock speaks: OpenAI chat-completion chunks and
//! Anthropic message events, streamed or whole, and their error bodies.

use serde_json::{Value, json};

use super::script::{Call, Step, Usage, pieces};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    OpenAi,
    Anthropic,
}

/// One piece of a streamed body.
pub(super) struct Frame {
    pub data: String,
    /// Carries generated text or tool arguments (the first one is "the first token").
    pub content: bool,
    pub delay_ms: u64,
}

/// How a streamed body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    Complete,
    /// Nothing more until the client goes away.
    Stall,
    /// The body ends without its terminator.
    Cut,
}

/// What one answer holds, provider-neutral.
struct Answer {
    text: Vec<String>,
    calls: Vec<(String, String, Vec<String>)>,
    usage: Usage,
    first_delay: u64,
    chunk_delay: u64,
    end: End,
}

fn estimate(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

fn answer(step: &Step, input_est: u64) -> Answer {
    let usage = |u: &Option<Usage>, out_chars: usize| {
        u.unwrap_or(Usage {
            input_tokens: input_est,
            output_tokens: estimate(out_chars),
        })
    };
    let call = |i: usize, c: &Call, n: usize| {
        let args = if c.arguments.is_null() {
            "{}".to_string()
        } else {
            c.arguments.to_string()
        };
        let id = c.id.clone().unwrap_or_else(|| format!("call_mock_{i}"));
        (id, c.name.clone(), pieces(&args, n))
    };
    let text_only = |text: &str, end| Answer {
        text: pieces(text, 3),
        calls: Vec::new(),
        usage: usage(&None, text.len()),
        first_delay: 0,
        chunk_delay: 0,
        end,
    };
    match step {
        Step::Text {
            text,
            chunks,
            first_token_delay_ms,
            chunk_delay_ms,
            usage: u,
            ..
        } => Answer {
            text: pieces(text, *chunks),
            calls: Vec::new(),
            usage: usage(u, text.len()),
            first_delay: *first_token_delay_ms,
            chunk_delay: *chunk_delay_ms,
            end: End::Complete,
        },
        Step::ToolCalls {
            calls,
            arg_chunks,
            usage: u,
            ..
        } => {
            let calls: Vec<_> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| call(i, c, *arg_chunks))
                .collect();
            let chars = calls
                .iter()
                .map(|(_, n, a)| n.len() + a.concat().len())
                .sum();
            Answer {
                text: Vec::new(),
                calls,
                usage: usage(u, chars),
                first_delay: 0,
                chunk_delay: 0,
                end: End::Complete,
            }
        }
        Step::Stall { text_before, .. } => text_only(text_before, End::Stall),
        Step::Cut { text_before, .. } => text_only(text_before, End::Cut),
        _ => text_only("", End::Complete),
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The streamed body of `step` (already resolved), as frames, and how it ends.
pub(super) fn stream(
    format: Format,
    step: &Step,
    model: &str,
    include_usage: bool,
    input_est: u64,
) -> (Vec<Frame>, End) {
    let a = answer(step, input_est);
    let frames = match format {
        Format::OpenAi => openai_frames(&a, model, include_usage),
        Format::Anthropic => anthropic_frames(&a, model),
    };
    (frames, a.end)
}

fn frame(data: String, content: bool, delay_ms: u64) -> Frame {
    Frame {
        data,
        content,
        delay_ms,
    }
}

fn openai_frames(a: &Answer, model: &str, include_usage: bool) -> Vec<Frame> {
    let created = now_s();
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut out = vec![frame(
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        false,
        0,
    )];
    for (i, t) in a.text.iter().enumerate() {
        let delay = if i == 0 { a.first_delay } else { a.chunk_delay };
        out.push(frame(
            chunk(json!({"content": t}), Value::Null),
            true,
            delay,
        ));
    }
    for (i, (id, name, args)) in a.calls.iter().enumerate() {
        let head = json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]});
        out.push(frame(chunk(head, Value::Null), true, 0));
        for piece in args {
            let d = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
            out.push(frame(chunk(d, Value::Null), true, a.chunk_delay));
        }
    }
    if a.end != End::Complete {
        return out;
    }
    let finish = if a.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out.push(frame(chunk(json!({}), json!(finish)), false, 0));
    if include_usage {
        let u = &a.usage;
        let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.input_tokens + u.output_tokens}});
        out.push(frame(format!("data: {c}\n\n"), false, 0));
    }
    out.push(frame("data: [DONE]\n\n".into(), false, 0));
    out
}

fn anthropic_frames(a: &Answer, model: &str) -> Vec<Frame> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let start = json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": a.usage.input_tokens, "output_tokens": 1}}});
    let mut out = vec![frame(event("message_start", start), false, 0)];
    let mut index = 0;
    if !a.text.is_empty() {
        let s = json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}});
        out.push(frame(event("content_block_start", s), false, 0));
        for (i, t) in a.text.iter().enumerate() {
            let delay = if i == 0 { a.first_delay } else { a.chunk_delay };
            let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}});
            out.push(frame(event("content_block_delta", d), true, delay));
        }
        if a.end != End::Complete {
            return out;
        }
        out.push(frame(
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ),
            false,
            0,
        ));
        index += 1;
    }
    for (id, name, args) in &a.calls {
        let s = json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}});
        out.push(frame(event("content_block_start", s), true, 0));
        for piece in args {
            let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}});
            out.push(frame(event("content_block_delta", d), true, a.chunk_delay));
        }
        out.push(frame(
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ),
            false,
            0,
        ));
        index += 1;
    }
    let stop = if a.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": a.usage.output_tokens}});
    out.push(frame(event("message_delta", delta), false, 0));
    out.push(frame(
        event("message_stop", json!({"type": "message_stop"})),
        false,
        0,
    ));
    out
}

/// The whole (non-streamed) answer.
pub(super) fn whole(format: Format, step: &Step, model: &str, input_est: u64) -> Value {
    let a = answer(step, input_est);
    let text = a.text.concat();
    match format {
        Format::OpenAi => {
            let calls: Vec<Value> = a.calls.iter().map(|(id, name, args)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.concat()}})
            }).collect();
            let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            let finish = if calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": now_s(), "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": {"prompt_tokens": a.usage.input_tokens, "completion_tokens": a.usage.output_tokens,
                          "total_tokens": a.usage.input_tokens + a.usage.output_tokens}})
        }
        Format::Anthropic => {
            let mut content = Vec::new();
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            for (id, name, args) in &a.calls {
                let input: Value = serde_json::from_str(&args.concat()).unwrap_or(json!({}));
                content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
            let stop = if a.calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": a.usage.input_tokens, "output_tokens": a.usage.output_tokens}})
        }
    }
}

/// The provider's JSON error body.
pub(super) fn error_body(format: Format, status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    match format {
        Format::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Format::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    }
}
