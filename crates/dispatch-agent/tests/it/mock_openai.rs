//! The mock speaks OpenAI Chat Completions as the real API does: the exact
//! SSE shape of `chat.completion.chunk`s, tool-call fragments, usage and
//! `[DONE]`; the whole `chat.completion`; the `{"error": …}` bodies.

use crate::mock_common;

use mock_common::{chunks, mock, openai_request, post};
use serde_json::{Value, json};

#[tokio::test]
async fn streamed_text_is_role_then_pieces_then_finish_then_usage_then_done() {
    let m = mock(
        json!([{"kind": "text", "text": "Hello, world!", "chunks": 3,
        "usage": {"input_tokens": 11, "output_tokens": 4}}]),
    )
    .await;
    let r = post(&m, "/chat/completions", &openai_request(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .split(';')
            .next(),
        Some("text/event-stream")
    );
    let chunks = chunks(&r.text().await.expect("body"));
    assert_eq!(chunks.len(), 1 + 3 + 1 + 1, "role, 3 pieces, finish, usage");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o-mini", "the request's model, echoed");
        assert_eq!(c["id"], chunks[0]["id"], "one id for the whole answer");
        assert!(c["created"].is_u64());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    let text: String = chunks[1..4]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("a piece")
        })
        .collect();
    assert_eq!(text, "Hello, world!");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15})
    );
    assert!(
        chunks[..5].iter().all(|c| c["usage"].is_null()),
        "earlier chunks carry usage: null"
    );
}

#[tokio::test]
async fn without_include_usage_there_is_no_usage_chunk() {
    let m = mock(json!([{"kind": "text", "text": "ok"}])).await;
    let mut req = openai_request(true);
    req["stream_options"] = json!({"include_usage": false});
    let body = post(&m, "/chat/completions", &req)
        .await
        .text()
        .await
        .expect("body");
    let chunks = chunks(&body);
    assert!(!body.contains("usage"), "{body}");
    assert_eq!(
        chunks.last().expect("a chunk")["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn tool_call_fragments_reassemble_to_the_scripted_arguments() {
    let args = json!({"order": "12345", "fields": ["status", "eta"], "note": "naïve ☃"});
    let m = mock(json!([{"kind": "tool_calls", "arg_chunks": 4, "calls": [
        {"name": "lookup", "arguments": args, "id": "call_given"},
        {"name": "refund", "arguments": {"amount": 3}},
    ]}]))
    .await;
    let chunks = chunks(
        &post(&m, "/chat/completions", &openai_request(true))
            .await
            .text()
            .await
            .expect("body"),
    );
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut pieces = [0, 0];
    for c in &chunks {
        for f in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = f["index"].as_u64().expect("an index") as usize;
            if i == calls.len() {
                assert_eq!(f["type"], "function", "the first fragment: {f}");
                assert_eq!(f["function"]["arguments"], "", "the first fragment: {f}");
                let id = f["id"].as_str().expect("the first fragment has an id");
                let name = f["function"]["name"].as_str().expect("and a name");
                calls.push((id.into(), name.into(), String::new()));
            } else {
                assert!(
                    f.get("id").is_none() && f["function"].get("name").is_none(),
                    "{f}"
                );
                calls[i].2 += f["function"]["arguments"].as_str().expect("a piece");
                pieces[i] += 1;
            }
        }
    }
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "call_given");
    assert_eq!(
        (calls[0].1.as_str(), calls[1].1.as_str()),
        ("lookup", "refund")
    );
    assert!(!calls[1].0.is_empty() && calls[1].0 != calls[0].0);
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].2).expect("json"),
        args
    );
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].2).expect("json"),
        json!({"amount": 3})
    );
    assert_eq!(pieces, [4, 4], "arguments arrive in arg_chunks pieces");
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish.collect::<Vec<_>>(), ["tool_calls"]);
}

#[tokio::test]
async fn tool_call_ids_differ_between_answers() {
    let step = json!({"kind": "tool_calls", "calls": [{"name": "lookup"}]});
    let m = mock(json!([step, step])).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let body = post(&m, "/chat/completions", &openai_request(false)).await;
        let body: Value = body.json().await.expect("json");
        ids.push(body["choices"][0]["message"]["tool_calls"][0]["id"].clone());
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_whole_answer_is_one_chat_completion() {
    let m = mock(json!([
        {"kind": "text", "text": "All good.", "usage": {"input_tokens": 5, "output_tokens": 3}},
        {"kind": "tool_calls", "calls": [{"name": "lookup", "arguments": {"q": 1}}]},
    ]))
    .await;
    let r = post(&m, "/chat/completions", &openai_request(false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "All good.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    );
    let v: Value = post(&m, "/chat/completions", &openai_request(false))
        .await
        .json()
        .await
        .expect("json");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["type"], "function");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        r#"{"q":1}"#
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn a_truncated_answer_finishes_for_length() {
    let m = mock(json!([
        {"kind": "text", "text": "cut short", "truncated": true},
        {"kind": "text", "text": "cut short", "truncated": true},
    ]))
    .await;
    let chunks = chunks(
        &post(&m, "/chat/completions", &openai_request(true))
            .await
            .text()
            .await
            .expect("body"),
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    let v: Value = post(&m, "/chat/completions", &openai_request(false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn scripted_errors_have_the_status_the_retry_after_and_the_openai_shape() {
    let m = mock(json!([
        {"kind": "error", "status": 429, "retry_after": 7, "message": "Rate limit reached"},
        {"kind": "error", "status": 500, "message": "The server had an error"},
    ]))
    .await;
    let r = post(&m, "/chat/completions", &openai_request(true)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["message"], "Rate limit reached");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["type"].is_string());
    let r = post(&m, "/chat/completions", &openai_request(true)).await;
    assert_eq!(r.status(), 500);
    assert!(r.headers().get("retry-after").is_none());
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v,
        json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}})
    );
}

#[tokio::test]
async fn a_request_the_real_api_would_refuse_is_a_400_and_uses_no_step() {
    let m = mock(json!([{"kind": "text", "text": "the step"}])).await;
    let r = post(&m, "/chat/completions", &json!({"model": "m"})).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("messages"))
    );
    let r = dispatch_http::fallback()
        .post(format!("{}/chat/completions", m.base_url()))
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let v: Value = post(&m, "/chat/completions", &openai_request(false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "the step");
    assert_eq!(m.request_count(), 3, "refused requests are recorded too");
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404_that_names_the_served_paths() {
    let m = mock(json!([])).await;
    let base = m.base_url();
    let root = base.trim_end_matches("/v1");
    let r = dispatch_http::fallback()
        .post(format!("{root}/chat/completions"))
        .json(&openai_request(false))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/v1"))
    );
}
