//! The mock speaks Anthropic Messages as the real API does: the named
//! event sequence, text and `input_json_delta` pieces, `message_delta`
//! with the stop reason and output tokens; the whole `message`; the
//! `{"type": "error", …}` bodies.

use crate::mock_common;

use mock_common::{Event, anthropic_request, events, mock, names, post};
use serde_json::{Value, json};

async fn stream(m: &dispatch_test_support::mock::MockServer) -> Vec<Event> {
    let r = post(m, "/messages", &anthropic_request(true)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    events(&r.text().await.expect("body"))
}

#[tokio::test]
async fn streamed_text_is_the_real_event_sequence() {
    let m = mock(json!([{"kind": "text", "text": "Hello there", "chunks": 2,
        "usage": {"input_tokens": 12, "output_tokens": 3}}]))
    .await;
    let ev = stream(&m).await;
    assert_eq!(
        names(&ev),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for e in &ev {
        assert_eq!(
            e.json()["type"].as_str(),
            e.event.as_deref(),
            "data.type repeats the event name"
        );
    }
    let start = &ev[0].json()["message"];
    assert_eq!(
        start["model"], "claude-haiku-4-5",
        "the request's model, echoed"
    );
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 12);
    assert!(
        start["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_"))
    );
    assert_eq!(
        ev[2].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = ev[3..5]
        .iter()
        .map(|e| {
            let d = e.json();
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().expect("text").to_string()
        })
        .collect();
    assert_eq!(text, "Hello there");
    assert_eq!(
        ev[5].json(),
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        ev[6].json(),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 3}})
    );
    assert_eq!(ev[7].json(), json!({"type": "message_stop"}));
}

#[tokio::test]
async fn tool_use_blocks_stream_partial_json_that_reassembles() {
    let args = json!({"order": "12345", "deep": {"a": [1, 2, 3]}});
    let m = mock(json!([{"kind": "tool_calls", "arg_chunks": 5, "calls": [
        {"name": "lookup", "arguments": args},
        {"name": "notify", "arguments": {"to": "ops"}, "id": "toolu_given"},
    ]}]))
    .await;
    let ev = stream(&m).await;
    let mut blocks: Vec<(Value, String, usize)> = Vec::new();
    for e in &ev {
        let d = e.json();
        match e.event.as_deref() {
            Some("content_block_start") => {
                assert_eq!(d["index"], blocks.len());
                assert_eq!(d["content_block"]["type"], "tool_use");
                assert_eq!(d["content_block"]["input"], json!({}));
                blocks.push((d["content_block"].clone(), String::new(), 0));
            }
            Some("content_block_delta") => {
                let i = d["index"].as_u64().expect("index") as usize;
                assert_eq!(d["delta"]["type"], "input_json_delta");
                blocks[i].1 += d["delta"]["partial_json"].as_str().expect("a piece");
                blocks[i].2 += 1;
            }
            _ => {}
        }
    }
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].0["name"], "lookup");
    assert!(blocks[0].0["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(blocks[1].0["id"], "toolu_given");
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[0].1).expect("json"),
        args
    );
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[1].1).expect("json"),
        json!({"to": "ops"})
    );
    assert_eq!(blocks[0].2, 5, "arguments arrive in arg_chunks pieces");
    let delta = ev
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .expect("a message_delta");
    assert_eq!(delta.json()["delta"]["stop_reason"], "tool_use");
    assert_eq!(names(&ev).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn a_truncated_answer_stops_for_max_tokens() {
    let m = mock(json!([{"kind": "text", "text": "cut", "truncated": true}])).await;
    let ev = stream(&m).await;
    assert_eq!(
        ev[ev.len() - 2].json()["delta"]["stop_reason"],
        "max_tokens"
    );
}

#[tokio::test]
async fn a_whole_answer_is_one_message() {
    let m = mock(json!([
        {"kind": "text", "text": "Done.", "usage": {"input_tokens": 9, "output_tokens": 2}},
        {"kind": "tool_calls", "calls": [{"name": "lookup", "arguments": {"q": "x"}}]},
    ]))
    .await;
    let v: Value = post(&m, "/messages", &anthropic_request(false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-haiku-4-5");
    assert_eq!(v["content"], json!([{"type": "text", "text": "Done."}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 9);
    assert_eq!(v["usage"]["output_tokens"], 2);
    let v: Value = post(&m, "/messages", &anthropic_request(false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["name"], "lookup");
    assert_eq!(v["content"][0]["input"], json!({"q": "x"}));
    assert_eq!(v["stop_reason"], "tool_use");
}

#[tokio::test]
async fn scripted_errors_have_the_status_the_retry_after_and_the_anthropic_shape() {
    let m = mock(json!([
        {"kind": "error", "status": 429, "retry_after": 3, "message": "rate limited"},
        {"kind": "error", "status": 529, "message": "Overloaded"},
    ]))
    .await;
    let r = post(&m, "/messages", &anthropic_request(true)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}})
    );
    let r = post(&m, "/messages", &anthropic_request(true)).await;
    assert_eq!(r.status(), 529);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn a_request_without_max_tokens_is_refused_as_the_real_api_does() {
    let m = mock(json!([])).await;
    let mut req = anthropic_request(true);
    req.as_object_mut().expect("an object").remove("max_tokens");
    let r = post(&m, "/messages", &req).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_tokens"))
    );
}
