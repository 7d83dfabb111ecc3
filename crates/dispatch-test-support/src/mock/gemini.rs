//! The Gemini wire format (`POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
//! and `:generateContent`): `GenerateContentResponse` chunks, the last with
//! its `finishReason` and `usageMetadata`, and Google's
//! `{"error": {code, message, status}}` body.

use serde_json::{Value, json};

use super::answer::{Answer, End, Finish, Frame, Meta};

fn finish_reason(end: End) -> &'static str {
    match end {
        End::Finish(Finish::Length) => "MAX_TOKENS",
        _ => "STOP",
    }
}

fn usage(a: &Answer) -> Value {
    let u = a.usage;
    json!({
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": u.output_tokens,
        "totalTokenCount": u.input_tokens + u.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.input_tokens}],
    })
}

/// What a request that the real API would refuse lacks (`None`: it is fine).
pub(super) fn invalid(body: &Value) -> Option<String> {
    match body["contents"].as_array() {
        Some(c) if !c.is_empty() => None,
        _ => Some("* GenerateContentRequest.contents: contents is not specified\n".into()),
    }
}

/// Whether the request offers Google Search grounding (`{google_search: {}}`).
pub(super) fn offers_web_search(body: &Value) -> bool {
    let tools = body["tools"].as_array().into_iter().flatten();
    tools.into_iter().any(|t| t.get("google_search").is_some())
}

/// The answer's `groundingMetadata`: its queries and the pages found.
fn grounding(a: &Answer) -> Value {
    let queries: Vec<&str> = a.searches.iter().map(|s| s.query.as_str()).collect();
    let chunks: Vec<Value> = a
        .searches
        .iter()
        .flat_map(|s| &s.results)
        .map(|p| json!({"web": {"uri": p.url, "title": p.title}}))
        .collect();
    json!({"webSearchQueries": queries, "groundingChunks": chunks,
        "searchEntryPoint": {"renderedContent": "<div>mock search</div>"}})
}

/// How many turns the model already took in the request's `contents`.
pub(super) fn assistant_turns(body: &Value) -> usize {
    body["contents"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["role"] == "model").count())
}

/// The `functionCall` parts of the answer (arguments that are not a JSON
/// object cannot be said on this wire: they become `{}`).
fn call_parts(a: &Answer) -> Vec<Value> {
    a.calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments.concat())
                .ok()
                .filter(Value::is_object)
                .unwrap_or(json!({}));
            json!({"functionCall": {"name": c.name, "args": args}})
        })
        .collect()
}

fn chunk(m: &Meta<'_>, parts: Vec<Value>, finish: Option<&str>, usage: Option<Value>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    let mut c = json!({"candidates": [candidate], "modelVersion": m.model,
        "responseId": format!("mock{}", m.seq)});
    if let Some(u) = usage {
        c["usageMetadata"] = u;
    }
    c
}

/// The streamed body (`alt=sse`): one `data:` line per chunk.
pub(super) fn stream(a: &Answer, m: Meta<'_>) -> Vec<Frame> {
    let data = |c: Value| format!("data: {c}\n\n");
    let mut out: Vec<Frame> = a
        .text
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let c = chunk(&m, vec![json!({"text": t})], None, None);
            Frame::new(data(c), true, a.text_delay(i))
        })
        .collect();
    if !matches!(a.end, End::Finish(_)) {
        return out;
    }
    let calls = call_parts(a);
    let content = !calls.is_empty();
    let mut last = chunk(&m, calls, Some(finish_reason(a.end)), Some(usage(a)));
    if !a.searches.is_empty() {
        last["candidates"][0]["groundingMetadata"] = grounding(a);
    }
    out.push(Frame::new(data(last), content, a.chunk_delay_ms));
    out
}

/// The whole (non-streamed) `GenerateContentResponse`.
pub(super) fn whole(a: &Answer, m: Meta<'_>) -> Value {
    let mut parts = Vec::new();
    let text = a.full_text();
    if !text.is_empty() {
        parts.push(json!({"text": text}));
    }
    parts.extend(call_parts(a));
    chunk(&m, parts, Some(finish_reason(a.end)), Some(usage(a)))
}

/// The `{"error": {code, message, status}}` body for `status`.
pub(super) fn error(status: u16, message: &str) -> Value {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        500.. => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::script::{Call, Step};

    #[test]
    fn tool_calls_come_whole_in_the_last_chunk_with_stop_and_usage() {
        let step = Step::ToolCalls {
            calls: vec![Call {
                name: "lookup".into(),
                arguments: json!({"order": "1"}),
                id: None,
            }],
            arg_chunks: 3,
            usage: None,
            delay_ms: 0,
        };
        let meta = Meta {
            model: "gemini-x",
            seq: 2,
            created: 0,
        };
        let frames = stream(&Answer::plan(&step, 4), meta);
        assert_eq!(frames.len(), 1);
        let data = frames[0].data.strip_prefix("data: ").expect("data");
        let v: Value = serde_json::from_str(data.trim()).expect("json");
        assert_eq!(
            v["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"name": "lookup", "args": {"order": "1"}}}])
        );
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 4);
        assert_eq!(error(429, "x")["error"]["status"], "RESOURCE_EXHAUSTED");
    }
}
