//! The faults the mock scripts behave as their real counterparts do: a
//! stalled stream stays open and silent without holding up anyone else, a
//! cut stream ends without its terminator, garbage is a 200 event stream of
//! non-JSON data, and dropping the mock ends everything it still serves.

use crate::mock_common;

use std::time::Duration;

use mock_common::{anthropic_request, events, mock, names, openai_request, post};
use serde_json::{Value, json};

/// Reads the body until it ends or `limit` passes; `true` when it ended.
async fn read_for(r: &mut reqwest::Response, body: &mut String, limit: Duration) -> bool {
    loop {
        match tokio::time::timeout(limit, r.chunk()).await {
            Err(_) => return false,
            Ok(Ok(Some(bytes))) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None) | Err(_)) => return true,
        }
    }
}

#[tokio::test]
async fn a_stall_sends_its_text_then_nothing_while_others_are_answered() {
    let m = mock(json!([
        {"kind": "stall", "text_before": "Let me think"},
        {"kind": "text", "text": "meanwhile"},
    ]))
    .await;
    let client = dispatch_http::builder("test")
        .expect("a builder")
        .timeout(Duration::from_millis(400))
        .build()
        .expect("client");
    let mut stalled = client
        .post(format!("{}/chat/completions", m.base_url()))
        .json(&openai_request(true))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(stalled.status(), 200);
    let other = post(&m, "/chat/completions", &openai_request(false)).await;
    let other: Value = other.json().await.expect("json");
    assert_eq!(other["choices"][0]["message"]["content"], "meanwhile");
    let mut body = String::new();
    let mut text = String::new();
    let err = loop {
        match stalled.chunk().await {
            Ok(Some(bytes)) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) => panic!("a stalled stream ended: {body}"),
            Err(e) => break e,
        }
    };
    assert!(err.is_timeout(), "the client gives up: {err}");
    for e in events(&body) {
        if let Some(t) = e.json()["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, "Let me think");
    assert!(!body.contains("finish_reason\":\"") && !body.contains("[DONE]"));
}

#[tokio::test]
async fn an_anthropic_stall_starts_the_message_and_never_stops_it() {
    let m = mock(json!([{"kind": "stall", "text_before": "hm"}])).await;
    let mut r = post(&m, "/messages", &anthropic_request(true)).await;
    let mut body = String::new();
    assert!(!read_for(&mut r, &mut body, Duration::from_millis(300)).await);
    let ev = events(&body);
    assert_eq!(
        names(&ev)[..3],
        ["message_start", "ping", "content_block_start"]
    );
    assert!(!names(&ev).contains(&"message_stop"));
}

#[tokio::test]
async fn a_cut_stream_ends_without_its_terminator_in_both_formats() {
    let m = mock(json!([
        {"kind": "cut", "text_before": "half an answ"},
        {"kind": "cut", "text_before": "half an answ"},
        {"kind": "cut"},
    ]))
    .await;
    let body = post(&m, "/chat/completions", &openai_request(true))
        .await
        .text()
        .await
        .expect("the body ends");
    let ev = events(&body);
    assert!(ev.iter().all(|e| e.data != "[DONE]"), "{body}");
    assert!(
        ev.iter()
            .all(|e| e.json()["choices"][0]["finish_reason"].is_null()),
        "{body}"
    );
    let text: String = ev
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, "half an answ");
    for _ in 0..2 {
        let body = post(&m, "/messages", &anthropic_request(true))
            .await
            .text()
            .await
            .expect("the body ends");
        let ev = events(&body);
        assert_eq!(names(&ev)[..2], ["message_start", "ping"]);
        assert!(
            !names(&ev).contains(&"message_stop") && !names(&ev).contains(&"message_delta"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_cut_whole_answer_is_truncated_json() {
    let m = mock(json!([
        {"kind": "cut", "text_before": "partial"},
        {"kind": "cut", "text_before": "☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃"},
    ]))
    .await;
    for path in ["/chat/completions", "/messages"] {
        let req = if path == "/messages" {
            anthropic_request(false)
        } else {
            openai_request(false)
        };
        let r = post(&m, path, &req).await;
        assert_eq!(r.status(), 200);
        let body = r.text().await.expect("the body ends");
        assert!(body.starts_with('{'));
        assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    }
}

#[tokio::test]
async fn garbage_is_a_200_event_stream_of_non_json_lines() {
    let m = mock(json!([
        {"kind": "garbage", "body": "<html>\nBad Gateway\n</html>"},
        {"kind": "garbage"},
    ]))
    .await;
    let r = post(&m, "/chat/completions", &openai_request(true)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let ev = events(&r.text().await.expect("body"));
    let data: Vec<&str> = ev.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["<html>", "Bad Gateway", "</html>"]);
    let body = post(&m, "/messages", &anthropic_request(true))
        .await
        .text()
        .await
        .expect("body");
    let ev = events(&body);
    assert!(!ev.is_empty(), "the default garbage is not empty");
    assert!(
        ev.iter()
            .all(|e| serde_json::from_str::<Value>(&e.data).is_err())
    );
}

#[tokio::test]
async fn dropping_the_mock_ends_a_stalled_stream_and_stops_listening() {
    let m = mock(json!([{"kind": "stall", "text_before": "…"}])).await;
    let addr = m.addr();
    let mut r = post(&m, "/chat/completions", &openai_request(true)).await;
    let mut body = String::new();
    assert!(!read_for(&mut r, &mut body, Duration::from_millis(100)).await);
    drop(m);
    assert!(
        read_for(&mut r, &mut body, Duration::from_secs(10)).await,
        "the stalled stream ends once the mock is dropped"
    );
    // A blocking connect to loopback answers at once.
    dispatch_test_support::eventually_async(10, "the port to close", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}
