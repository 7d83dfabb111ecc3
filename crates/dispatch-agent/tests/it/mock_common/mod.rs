//! Helpers for the mock model server's tests: start a mock on loopback,
//! send requests with plain reqwest, and split an SSE body strictly into
//! its events (so a stray byte in the wire format fails the test).
#![allow(dead_code)]

use dispatch_test_support::mock::{MockServer, Script};
use serde_json::{Value, json};

/// A mock serving `steps` (as JSON), then the default fallback.
pub async fn mock(steps: Value) -> MockServer {
    script(json!({ "steps": steps })).await
}

/// A mock serving a whole script (as JSON).
pub async fn script(script: Value) -> MockServer {
    let script: Script = serde_json::from_value(script).expect("a valid script");
    MockServer::start(script).await.expect("the mock starts")
}

/// POSTs `body` to `{base_url}{path}` (`path`: `/chat/completions` or `/messages`).
pub async fn post(m: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    dispatch_http::fallback()
        .post(format!("{}{path}", m.base_url()))
        .json(body)
        .send()
        .await
        .expect("the mock answers")
}

/// An OpenAI Chat Completions request, streamed with usage or not.
pub fn openai_request(stream: bool) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// An Anthropic Messages request, streamed or not.
pub fn anthropic_request(stream: bool) -> Value {
    json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

/// One SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }
}

/// Splits an SSE body into events. Every event must be `event: NAME\n`
/// (optional) then one `data: …\n`, then a blank line; anything else fails.
pub fn events(body: &str) -> Vec<Event> {
    assert!(
        body.is_empty() || body.ends_with("\n\n"),
        "the body ends mid-event: {body:?}"
    );
    body.split_terminator("\n\n")
        .map(|block| {
            let mut lines = block.split('\n');
            let first = lines.next().expect("a line");
            let (event, data) = match first.strip_prefix("event: ") {
                Some(name) => (Some(name.to_string()), lines.next().expect("a data line")),
                None => (None, first),
            };
            let data = data
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data line: {data:?} in {block:?}"));
            assert_eq!(lines.next(), None, "one data line per event: {block:?}");
            Event {
                event,
                data: data.to_string(),
            }
        })
        .collect()
}

/// The names of Anthropic events.
pub fn names(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.event.as_deref().expect("a named event"))
        .collect()
}

/// The `data` JSON of OpenAI chunks, the `[DONE]` line checked and dropped.
pub fn chunks(body: &str) -> Vec<Value> {
    let events = events(body);
    let (last, rest) = events.split_last().expect("some events");
    assert_eq!(last.data, "[DONE]", "the stream ends with [DONE]");
    assert!(
        rest.iter().all(|e| e.event.is_none()),
        "OpenAI names no events"
    );
    rest.iter().map(Event::json).collect()
}
