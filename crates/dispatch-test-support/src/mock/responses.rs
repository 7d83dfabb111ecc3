//! The OpenAI Responses wire format (`POST /v1/responses`): typed events
//! from `response.created` to `response.completed` (or
//! `response.incomplete` when cut at the output limit), the whole
//! `response` object, and OpenAI's `{"error": {…}}` body.

use serde_json::{Value, json};

use super::answer::{Answer, End, Finish, Frame, Meta};

fn event(data: Value) -> String {
    let name = data["type"].as_str().unwrap_or_default().to_string();
    format!("event: {name}\ndata: {data}\n\n")
}

fn usage(a: &Answer) -> Value {
    let u = a.usage;
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// What a request that the real API would refuse lacks (`None`: it is fine).
pub(super) fn invalid(body: &Value) -> Option<String> {
    if !body["model"].is_string() {
        return Some("Missing required parameter: 'model'.".into());
    }
    if !(body["input"].is_array() || body["input"].is_string()) {
        return Some("Missing required parameter: 'input'.".into());
    }
    None
}

/// Whether the request offers the hosted web search tool.
pub(super) fn offers_web_search(body: &Value) -> bool {
    let tools = body["tools"].as_array().into_iter().flatten();
    tools.into_iter().any(|t| t["type"] == "web_search")
}

/// How many turns the model already took in the request's `input`.
pub(super) fn assistant_turns(body: &Value) -> usize {
    body["input"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|i| i["role"] == "assistant" || i["type"] == "function_call")
            .count()
    })
}

/// The text's `url_citation` annotations: every page the searches found.
fn citations(a: &Answer, text: &str) -> Value {
    let pages = a.searches.iter().flat_map(|s| &s.results);
    pages
        .map(|p| {
            json!({"type": "url_citation", "start_index": 0, "end_index": text.len(),
            "url": p.url, "title": p.title})
        })
        .collect()
}

fn message_item(a: &Answer, m: &Meta<'_>, text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "annotations": citations(a, text), "text": text}])
    } else {
        json!([])
    };
    json!({"id": format!("msg_mock{}", m.seq), "type": "message", "status": status,
        "role": "assistant", "content": content})
}

fn call_item(a: &Answer, m: &Meta<'_>, i: usize, done: bool) -> Value {
    let call = &a.calls[i];
    let (status, arguments) = if done {
        ("completed", call.arguments.concat())
    } else {
        ("in_progress", String::new())
    };
    json!({"id": format!("fc_mock{}_{i}", m.seq), "type": "function_call", "status": status,
        "arguments": arguments, "call_id": call.id("call_mock", m.seq, i), "name": call.name})
}

/// The `response` object, with `output` and `status`.
fn response(a: &Answer, m: &Meta<'_>, status: &str, output: Vec<Value>) -> Value {
    let mut r = json!({
        "id": format!("resp_mock{}", m.seq), "object": "response", "created_at": m.created,
        "status": status, "model": m.model, "output": output, "usage": Value::Null,
        "incomplete_details": Value::Null, "error": Value::Null,
    });
    if status != "in_progress" {
        r["usage"] = usage(a);
    }
    if status == "incomplete" {
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    r
}

/// A hosted search's `web_search_call` item; done, with its query and the
/// pages found (`include: web_search_call.action.sources`).
fn search_item(a: &Answer, m: &Meta<'_>, i: usize, done: bool) -> Value {
    let id = format!("ws_mock{}_{i}", m.seq);
    if !done {
        return json!({"id": id, "type": "web_search_call", "status": "in_progress"});
    }
    let s = &a.searches[i];
    let sources: Vec<Value> = s
        .results
        .iter()
        .map(|p| json!({"type": "url", "url": p.url}))
        .collect();
    json!({"id": id, "type": "web_search_call", "status": "completed",
        "action": {"type": "search", "query": s.query, "sources": sources}})
}

fn output(a: &Answer, m: &Meta<'_>) -> Vec<Value> {
    let mut out: Vec<Value> = (0..a.searches.len())
        .map(|i| search_item(a, m, i, true))
        .collect();
    if !a.text.is_empty() {
        out.push(message_item(a, m, &a.full_text(), "completed"));
    }
    out.extend((0..a.calls.len()).map(|i| call_item(a, m, i, true)));
    out
}

fn status(end: End) -> &'static str {
    match end {
        End::Finish(Finish::Length) => "incomplete",
        _ => "completed",
    }
}

/// The streamed body: one named event per frame, numbered.
pub(super) fn stream(a: &Answer, m: Meta<'_>) -> Vec<Frame> {
    let mut seq = 0u64;
    let mut frame = |mut data: Value, content: bool, delay_ms: u64| {
        data["sequence_number"] = json!(seq);
        seq += 1;
        Frame::new(event(data), content, delay_ms)
    };
    let created = response(a, &m, "in_progress", Vec::new());
    let mut out = vec![frame(
        json!({"type": "response.created", "response": created}),
        false,
        0,
    )];
    let mut index = 0;
    for i in 0..a.searches.len() {
        let item_id = format!("ws_mock{}_{i}", m.seq);
        out.push(frame(
            json!({"type": "response.output_item.added", "output_index": index,
            "item": search_item(a, &m, i, false)}),
            false,
            0,
        ));
        for phase in ["in_progress", "searching", "completed"] {
            out.push(frame(
                json!({"type": format!("response.web_search_call.{phase}"),
                "item_id": item_id, "output_index": index}),
                false,
                0,
            ));
        }
        out.push(frame(
            json!({"type": "response.output_item.done", "output_index": index,
            "item": search_item(a, &m, i, true)}),
            false,
            0,
        ));
        index += 1;
    }
    if !a.text.is_empty() {
        let item_id = format!("msg_mock{}", m.seq);
        out.push(frame(
            json!({"type": "response.output_item.added", "output_index": index,
            "item": message_item(a, &m, "", "in_progress")}),
            false,
            0,
        ));
        out.push(frame(
            json!({"type": "response.content_part.added", "item_id": item_id,
            "output_index": index, "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "text": ""}}),
            false,
            0,
        ));
        for (i, t) in a.text.iter().enumerate() {
            out.push(frame(
                json!({"type": "response.output_text.delta", "item_id": item_id,
                "output_index": index, "content_index": 0, "delta": t}),
                true,
                a.text_delay(i),
            ));
        }
        if !matches!(a.end, End::Finish(_)) {
            return out;
        }
        let text = a.full_text();
        out.push(frame(
            json!({"type": "response.output_text.done", "item_id": item_id,
            "output_index": index, "content_index": 0, "text": text}),
            false,
            0,
        ));
        out.push(frame(
            json!({"type": "response.output_item.done", "output_index": index,
            "item": message_item(a, &m, &text, "completed")}),
            false,
            0,
        ));
        index += 1;
    }
    if !matches!(a.end, End::Finish(_)) {
        return out;
    }
    for (i, call) in a.calls.iter().enumerate() {
        let item_id = format!("fc_mock{}_{i}", m.seq);
        out.push(frame(
            json!({"type": "response.output_item.added", "output_index": index,
            "item": call_item(a, &m, i, false)}),
            true,
            0,
        ));
        for piece in &call.arguments {
            out.push(frame(
                json!({"type": "response.function_call_arguments.delta",
                "item_id": item_id, "output_index": index, "delta": piece}),
                true,
                a.chunk_delay_ms,
            ));
        }
        out.push(frame(
            json!({"type": "response.function_call_arguments.done",
            "item_id": item_id, "output_index": index, "arguments": call.arguments.concat()}),
            false,
            0,
        ));
        out.push(frame(
            json!({"type": "response.output_item.done", "output_index": index,
            "item": call_item(a, &m, i, true)}),
            false,
            0,
        ));
        index += 1;
    }
    let status = status(a.end);
    let kind = if status == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let done = response(a, &m, status, output(a, &m));
    out.push(frame(json!({"type": kind, "response": done}), false, 0));
    out
}

/// The whole (non-streamed) `response`.
pub(super) fn whole(a: &Answer, m: Meta<'_>) -> Value {
    response(a, &m, status(a.end), output(a, &m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::script::Step;

    fn types(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| f.data.strip_prefix("event: "))
            .filter_map(|d| d.split('\n').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_text_stream_runs_from_created_to_completed_with_usage() {
        let a = Answer::plan(&Step::text("abcdef"), 3);
        let meta = Meta {
            model: "gpt-x",
            seq: 1,
            created: 1,
        };
        let frames = stream(&a, meta);
        assert_eq!(
            types(&frames),
            [
                "response.created",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let last = frames.last().expect("completed");
        assert!(last.data.contains("\"total_tokens\":5"), "{}", last.data);
    }
}
