//! The script and the record: steps are taken in order across both
//! endpoints, then the fallback; `rounds` answers from the conversation
//! alone; steps can be added while running (in process or over HTTP); every
//! request is recorded with its headers and body; many delayed requests are
//! answered together.

use crate::mock_common;

use dispatch_test_support::mock::{DEFAULT_REPLY, Step};
use mock_common::{anthropic_request, mock, openai_request, post, script};
use serde_json::{Value, json};

async fn openai_text(m: &dispatch_test_support::mock::MockServer, req: &Value) -> Value {
    let v: Value = post(m, "/chat/completions", req)
        .await
        .json()
        .await
        .expect("json");
    v["choices"][0]["message"].clone()
}

#[tokio::test]
async fn steps_are_shared_by_both_endpoints_in_order_then_the_fallback_answers() {
    let m = mock(json!([{"kind": "text", "text": "one"}, {"kind": "text", "text": "two"}])).await;
    assert_eq!(
        openai_text(&m, &openai_request(false)).await["content"],
        "one"
    );
    let v: Value = post(&m, "/messages", &anthropic_request(false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["content"][0]["text"], "two");
    for _ in 0..2 {
        let reply = openai_text(&m, &openai_request(false)).await;
        assert_eq!(reply["content"], DEFAULT_REPLY);
        let reply: Value =
            serde_json::from_str(reply["content"].as_str().expect("text")).expect("JSON text");
        assert_eq!(
            reply["category"], "shipping",
            "the default reply suits a triage agent"
        );
    }
}

#[tokio::test]
async fn rounds_call_a_tool_until_the_conversation_holds_that_many_rounds() {
    let m = script(json!({"fallback": {"kind": "rounds", "tool_rounds": 2, "tool_name": "search", "text": "final"}})).await;
    let mut req = openai_request(false);
    for round in 1..=2 {
        let reply = openai_text(&m, &req).await;
        let call = &reply["tool_calls"][0];
        assert_eq!(call["function"]["name"], "search", "round {round}");
        let messages = req["messages"].as_array_mut().expect("messages");
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "found"}));
    }
    assert_eq!(openai_text(&m, &req).await["content"], "final");
    // Stateless: a fresh conversation starts over, on either endpoint.
    assert!(openai_text(&m, &openai_request(false)).await["tool_calls"].is_array());
    let mut req = anthropic_request(false);
    let messages = req["messages"].as_array_mut().expect("messages");
    for _ in 0..2 {
        messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "search", "input": {}}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}));
    }
    let v: Value = post(&m, "/messages", &req)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["content"][0]["text"], "final");
}

#[tokio::test]
async fn requests_are_recorded_with_lowercased_headers_body_and_first_token_time() {
    let m = mock(json!([
        {"kind": "text", "text": "hello"},
        {"kind": "error", "status": 500, "message": "boom"},
    ]))
    .await;
    let req = openai_request(true);
    let r = dispatch_http::fallback()
        .post(format!("{}/chat/completions", m.base_url()))
        .header("Authorization", "Bearer sk-test")
        .header("X-Trace-Id", "abc")
        .json(&req)
        .send()
        .await
        .expect("answered");
    r.text().await.expect("body");
    let r = dispatch_http::fallback()
        .post(format!("{}/messages", m.base_url()))
        .header("x-api-key", "ak-test")
        .json(&anthropic_request(true))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 500);
    let got = m.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/v1/chat/completions");
    assert_eq!(got[1].path, "/v1/messages");
    assert_eq!(got[0].body, req);
    let header = |i: usize, name: &str| {
        got[i]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(0, "authorization").as_deref(),
        Some("Bearer sk-test")
    );
    assert_eq!(header(0, "x-trace-id").as_deref(), Some("abc"));
    assert_eq!(header(1, "x-api-key").as_deref(), Some("ak-test"));
    assert!(got[0].received_at_us > 0 && got[0].received_at_us <= got[1].received_at_us);
    let first = got[0]
        .first_token_sent_at_us
        .expect("the text's first piece left");
    assert!(first >= got[0].received_at_us);
    assert_eq!(
        got[1].first_token_sent_at_us, None,
        "an error sends no token"
    );
}

#[tokio::test]
async fn without_record_bodies_the_record_keeps_everything_but_the_body() {
    let m = script(json!({"record_bodies": false})).await;
    post(&m, "/chat/completions", &openai_request(false)).await;
    let got = m.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, Value::Null);
    assert!(!got[0].headers.is_empty());
}

#[tokio::test]
async fn steps_pushed_while_running_are_served_next() {
    let m = mock(json!([])).await;
    m.push(Step::text("pushed in process"));
    assert_eq!(
        openai_text(&m, &openai_request(false)).await["content"],
        "pushed in process"
    );
}

#[tokio::test]
async fn the_control_endpoints_append_steps_and_list_requests_over_http() {
    let m = mock(json!([])).await;
    let client = dispatch_http::fallback();
    let root = m.base_url().trim_end_matches("/v1").to_string();
    let r = client
        .post(format!("{root}/_mock/steps"))
        .json(&json!([{"kind": "text", "text": "a"}, {"kind": "error", "status": 503}]))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{root}/_mock/steps"))
        .json(&json!({"kind": "text", "text": "c"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.json::<Value>().await.expect("json")["queued"], 3);
    let r = client
        .post(format!("{root}/_mock/steps"))
        .json(&json!([{"kind": "txt"}]))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("txt")),
        "{v}"
    );
    let r = client
        .post(format!("{root}/_mock/steps"))
        .json(&json!({"kind": "text", "txt": "typo"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `txt`")),
        "one step's mistake is named: {v}"
    );
    assert_eq!(
        openai_text(&m, &openai_request(false)).await["content"],
        "a"
    );
    assert_eq!(
        post(&m, "/messages", &anthropic_request(false))
            .await
            .status(),
        503
    );
    assert_eq!(
        openai_text(&m, &openai_request(false)).await["content"],
        "c"
    );
    let listed: Value = client
        .get(format!("{root}/_mock/requests"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    let listed = listed.as_array().expect("an array of requests");
    assert_eq!(listed.len(), 3, "control calls are not model requests");
    assert_eq!(listed[1]["path"], "/v1/messages");
    assert_eq!(listed[0]["body"]["model"], "gpt-4o-mini");
    assert!(listed[0]["received_at_us"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_delayed_requests_are_all_answered() {
    const N: usize = 300;
    let m = script(json!({
        "fallback": {"kind": "rounds", "tool_rounds": 1, "delay_ms": 500, "text": "done"},
        "record_bodies": false,
    }))
    .await;
    let client = dispatch_http::fallback();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let client = client.clone();
        let url = format!("{}/chat/completions", m.base_url());
        tasks.spawn(async move {
            let body = client
                .post(url)
                .json(&openai_request(i % 2 == 0))
                .send()
                .await
                .expect("answered")
                .text()
                .await
                .expect("a whole body");
            (i, body)
        });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, body) = done.expect("the task finished");
        assert!(body.contains("lookup"), "request {i}: {body}");
        answered += 1;
    }
    assert_eq!(answered, N);
}
