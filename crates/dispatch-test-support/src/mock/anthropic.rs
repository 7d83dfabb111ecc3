//! The Anthropic Messages wire format (`POST /v1/messages`): named events
//! from `message_start` to `message_stop`, the whole `message` object, and
//! the `{"type": "error", "error": {…}}` body.

use serde_json::{Value, json};

use super::answer::{Answer, End, Finish, Frame, Meta};

fn stop_reason(end: End) -> &'static str {
    match end {
        End::Finish(Finish::ToolCalls) => "tool_use",
        End::Finish(Finish::Length) => "max_tokens",
        End::Finish(Finish::Paused) => "pause_turn",
        End::Finish(Finish::Stop) | End::Stall | End::Cut => "end_turn",
    }
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// What a request that the real API would refuse lacks (`None`: it is fine).
pub(super) fn invalid(body: &Value) -> Option<String> {
    if !body["model"].is_string() {
        return Some("model: Field required".into());
    }
    if !body["messages"].is_array() {
        return Some("messages: Field required".into());
    }
    if !body["max_tokens"].is_u64() {
        return Some("max_tokens: Field required".into());
    }
    unanswered_search(body)
}

/// A `server_tool_use` block of the last assistant message (a paused turn
/// sent back) without its `web_search_tool_result`, as the real API refuses.
fn unanswered_search(body: &Value) -> Option<String> {
    let last = body["messages"].as_array()?.last()?;
    if last["role"] != "assistant" {
        return None;
    }
    let blocks = last["content"].as_array()?;
    let answered = |id: &Value| {
        blocks
            .iter()
            .any(|b| b["type"] == "web_search_tool_result" && &b["tool_use_id"] == id)
    };
    let open = blocks
        .iter()
        .find(|b| b["type"] == "server_tool_use" && !answered(&b["id"]))?;
    Some(format!(
        "messages: `server_tool_use` block {} has no `web_search_tool_result` after it",
        open["id"]
    ))
}

/// Whether the request offers the hosted web search tool
/// (`{type: web_search_20250305, name: web_search}`).
pub(super) fn offers_web_search(body: &Value) -> bool {
    let tools = body["tools"].as_array().into_iter().flatten();
    tools.into_iter().any(|t| {
        t["name"] == "web_search"
            && t["type"]
                .as_str()
                .is_some_and(|k| k.starts_with("web_search_"))
    })
}

/// A search's `server_tool_use` block, then its `web_search_tool_result`.
fn search_blocks(a: &Answer, m: &Meta<'_>, i: usize, index: usize) -> Vec<Frame> {
    let s = &a.searches[i];
    let id = format!("srvtoolu_mock{}_{i}", m.seq);
    let start = |index: usize, block: Value| {
        let s = json!({"type": "content_block_start", "index": index, "content_block": block});
        Frame::new(event("content_block_start", s), false, 0)
    };
    let stop = |index: usize| {
        let stop = json!({"type": "content_block_stop", "index": index});
        Frame::new(event("content_block_stop", stop), false, 0)
    };
    let query = json!({"query": s.query}).to_string();
    let delta = json!({"type": "content_block_delta", "index": index,
        "delta": {"type": "input_json_delta", "partial_json": query}});
    let results: Vec<Value> = s
        .results
        .iter()
        .map(|p| {
            json!({"type": "web_search_result", "url": p.url, "title": p.title,
            "encrypted_content": "mock", "page_age": null})
        })
        .collect();
    vec![
        start(
            index,
            json!({"type": "server_tool_use", "id": id, "name": "web_search", "input": {}}),
        ),
        Frame::new(event("content_block_delta", delta), false, 0),
        stop(index),
        start(
            index + 1,
            json!({"type": "web_search_tool_result", "tool_use_id": id, "content": results}),
        ),
        stop(index + 1),
    ]
}

/// The streamed body: `event:` and `data:` lines per event, with a `ping`
/// after `message_start` as the real API sends.
pub(super) fn stream(a: &Answer, m: Meta<'_>) -> Vec<Frame> {
    let start = json!({"type": "message_start", "message": {
        "id": format!("msg_mock{}", m.seq), "type": "message", "role": "assistant",
        "model": m.model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": a.usage.input_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 1}}});
    let mut out = vec![
        Frame::new(event("message_start", start), false, 0),
        Frame::new(event("ping", json!({"type": "ping"})), false, 0),
    ];
    let block_stop = |index: usize| {
        let stop = json!({"type": "content_block_stop", "index": index});
        Frame::new(event("content_block_stop", stop), false, 0)
    };
    let mut index = 0;
    for i in 0..a.searches.len() {
        out.extend(search_blocks(a, &m, i, index));
        index += 2;
    }
    if !a.text.is_empty() {
        let s = json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}});
        out.push(Frame::new(event("content_block_start", s), false, 0));
        for (i, t) in a.text.iter().enumerate() {
            let d = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": t}});
            out.push(Frame::new(
                event("content_block_delta", d),
                true,
                a.text_delay(i),
            ));
        }
        if !matches!(a.end, End::Finish(_)) {
            return out;
        }
        out.push(block_stop(index));
        index += 1;
    }
    if !matches!(a.end, End::Finish(_)) {
        return out;
    }
    for (i, call) in a.calls.iter().enumerate() {
        let s = json!({"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": call.id("toolu_mock", m.seq, i), "name": call.name, "input": {}}});
        out.push(Frame::new(event("content_block_start", s), true, 0));
        for piece in &call.arguments {
            let d = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}});
            out.push(Frame::new(
                event("content_block_delta", d),
                true,
                a.chunk_delay_ms,
            ));
        }
        out.push(block_stop(index));
        index += 1;
    }
    let mut delta = json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason(a.end), "stop_sequence": null},
        "usage": {"output_tokens": a.usage.output_tokens}});
    if !a.searches.is_empty() {
        delta["usage"]["server_tool_use"] = json!({"web_search_requests": a.searches.len()});
    }
    out.push(Frame::new(event("message_delta", delta), false, 0));
    out.push(Frame::new(
        event("message_stop", json!({"type": "message_stop"})),
        false,
        0,
    ));
    out
}

/// The whole (non-streamed) `message`.
pub(super) fn whole(a: &Answer, m: Meta<'_>) -> Value {
    let mut content = Vec::new();
    let text = a.full_text();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for (i, c) in a.calls.iter().enumerate() {
        let input: Value = serde_json::from_str(&c.arguments.concat()).unwrap_or(json!({}));
        content.push(
            json!({"type": "tool_use", "id": c.id("toolu_mock", m.seq, i),
            "name": c.name, "input": input}),
        );
    }
    json!({
        "id": format!("msg_mock{}", m.seq), "type": "message", "role": "assistant",
        "model": m.model, "content": content,
        "stop_reason": stop_reason(a.end), "stop_sequence": null,
        "usage": {"input_tokens": a.usage.input_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": a.usage.output_tokens},
    })
}

/// The `{"type": "error", "error": {type, message}}` body for `status`.
pub(super) fn error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::script::Step;

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames
            .iter()
            .filter_map(|f| f.data.strip_prefix("event: "))
            .filter_map(|d| d.split('\n').next())
            .collect()
    }

    #[test]
    fn a_cut_or_stalled_answer_without_text_never_says_message_stop() {
        for step in [
            Step::Cut {
                text_before: String::new(),
                delay_ms: 0,
            },
            Step::Stall {
                text_before: String::new(),
                delay_ms: 0,
            },
        ] {
            let frames = stream(
                &Answer::plan(&step, 1),
                Meta {
                    model: "c",
                    seq: 0,
                    created: 0,
                },
            );
            assert_eq!(names(&frames), ["message_start", "ping"]);
        }
    }

    #[test]
    fn error_bodies_have_the_anthropic_shape() {
        assert_eq!(
            error(529, "Overloaded"),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        assert_eq!(error(429, "x")["error"]["type"], "rate_limit_error");
    }
}
