//! Model calls are recorded and billed exactly once, against the scripted
//! mock model server on loopback: an answer is saved before its tools run
//! (a helper killed mid-tool never makes the model answer twice); a cut,
//! stopped or lost call is billed with estimated tokens, marked so; and
//! `LIMIT COST` counts what was estimated.

use crate::common;
use crate::native_common;

use common::{Dispatch, eventually, kill_helper};
use native_common::{Mock, events_of, model_calls, native_agent, text};
use serde_json::{Value, json};

/// Every call of the run's inspect document has its tokens.
fn assert_billed(calls: &[Value]) {
    for c in calls {
        assert!(
            c["input_tokens"].as_u64().is_some_and(|n| n > 0),
            "input tokens: {c}"
        );
        assert!(c["output_tokens"].as_u64().is_some(), "output tokens: {c}");
        assert!(c["cost_usd"].as_f64().is_some(), "a cost: {c}");
    }
}

const PRICED: &str = "PRICE gpt-4o-mini INPUT 1000 OUTPUT 1000";

fn model(mock: &Mock) -> String {
    format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n{PRICED}",
        mock.url()
    )
}

/// The measurement: the mock saw 4 requests and the run listed 3.
/// Now each request sent is one record, and none is sent twice.
#[test]
fn a_helper_killed_during_a_tool_call_sends_no_call_twice_and_records_every_call_sent() {
    let d = Dispatch::new();
    let state = d.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "slow", "arguments": {}, "id": "c1"}]},
        {"kind": "tool_calls", "calls": [{"name": "slow", "arguments": {}, "id": "c2"}]},
        text("all done", 9, 2),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "crashy",
        &format!(
            "{}\nRETRY 3 BACKOFF 100ms..1s\nENV STATE={}\nTOOL LOCAL slow.sh AS slow",
            model(&mock),
            state.display()
        ),
    );
    // The second call's first run beats until the helper dies.
    std::fs::write(dir.join("slow.sh"), SLOW_SECOND).expect("slow");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let beats = state.join("beats");
    eventually(30, "the second round's tool runs", || {
        std::fs::metadata(&beats).is_ok_and(|m| m.len() > 0)
    });
    kill_helper(&d, &id);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let reqs = mock.requests();
    let calls = model_calls(&doc);
    for (i, r) in reqs.iter().enumerate() {
        assert!(
            reqs[..i].iter().all(|earlier| earlier.body != r.body),
            "request {} was sent before",
            i + 1
        );
    }
    assert_eq!(reqs.len(), 3, "no answer was asked for twice");
    assert_eq!(
        calls.len(),
        reqs.len(),
        "one record per request: {calls:#?}"
    );
    assert_billed(&calls);
    assert!(
        calls.iter().all(|c| c["estimated"].is_null()),
        "the provider's own usage: {calls:#?}"
    );
    let spent: f64 = calls.iter().filter_map(|c| c["cost_usd"].as_f64()).sum();
    let total = doc["usage"]["cost_usd"].as_f64().expect("run cost");
    assert!((spent - total).abs() < 1e-9, "{spent} vs {total}");
}

/// A tool that counts its runs in `$STATE/runs`; its second run beats in
/// `$STATE/beats` until it is killed (or gives up after half a minute, or
/// once `$STATE` is gone).
const SLOW_SECOND: &str = "echo x >> \"$STATE/runs\"\n\
    if [ \"$(wc -l < \"$STATE/runs\")\" -eq 2 ]; then\n\
      for i in $(seq 1 600); do date +%s%N >> \"$STATE/beats\" 2>/dev/null || exit 0; sleep 0.05; done\n\
    fi\n\
    echo ok\n";

#[test]
fn a_helper_killed_mid_round_reruns_only_the_tool_calls_whose_results_were_not_saved() {
    let d = Dispatch::new();
    let state = d.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "fast", "arguments": {}, "id": "c1"},
            {"name": "slow", "arguments": {}, "id": "c2"},
        ]},
        text("all done", 9, 2),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "resumer",
        &format!(
            "{}\nRETRY 3 BACKOFF 100ms..1s\nENV STATE={}\n\
             TOOL LOCAL fast.sh AS fast\nTOOL LOCAL slow.sh AS slow",
            model(&mock),
            state.display()
        ),
    );
    // Each tool counts its runs; the slow one's first run beats until the
    // helper dies (and gives up on its own, should it outlive it: after half
    // a minute, or once the test's directory is gone).
    std::fs::write(
        dir.join("fast.sh"),
        "echo x >> \"$STATE/fast-runs\"\necho fast\n",
    )
    .expect("fast");
    std::fs::write(
        dir.join("slow.sh"),
        "echo x >> \"$STATE/slow-runs\"\n\
         if [ \"$(wc -l < \"$STATE/slow-runs\")\" -eq 1 ]; then\n\
           for i in $(seq 1 600); do date +%s%N >> \"$STATE/beats\" 2>/dev/null || exit 0; sleep 0.05; done\n\
         fi\n\
         echo slow\n",
    )
    .expect("slow");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let beats = state.join("beats");
    eventually(30, "the slow tool runs", || {
        std::fs::metadata(&beats).is_ok_and(|m| m.len() > 0)
    });
    eventually(30, "the fast tool's result is saved", || {
        events_of(&d.inspect(&id), "checkpoint")
            .iter()
            .any(|c| c["step"] == "round-1-call-c1")
    });
    let doc = d.inspect(&id);
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(
        model_calls(&doc).len(),
        1,
        "the answer is recorded before its tools run"
    );
    kill_helper(&d, &id);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "all done");
    let reqs = mock.requests();
    let calls = model_calls(&doc);
    assert_eq!(reqs.len(), 2, "the tool-calling answer was not asked again");
    assert_eq!(calls.len(), 2, "one record per request sent: {calls:#?}");
    assert_billed(&calls);
    let numbers: Vec<u64> = calls.iter().filter_map(|c| c["call"].as_u64()).collect();
    assert_eq!(numbers, [1, 2]);
    // The second request answers both calls, from one run of each that completed.
    let second = reqs[1].body["messages"].as_array().expect("messages");
    let results: Vec<&str> = second
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(results.len(), 2, "{second:?}");
    let runs = |f: &str| {
        std::fs::read_to_string(state.join(f))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(runs("fast-runs"), 1, "a saved tool result is not run again");
    assert_eq!(runs("slow-runs"), 2, "the unfinished call runs again");
    // Each call recorded once, in the model's order.
    let ids: Vec<Value> = events_of(&doc, "tool_call")
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, [json!("c1"), json!("c2")]);
}

#[test]
fn a_stream_cut_mid_answer_is_billed_with_estimated_tokens_and_marked_so() {
    let d = Dispatch::new();
    let said = "a".repeat(400);
    let mock = Mock::start(json!([{"kind": "cut", "text_before": said}]));
    let dir = native_agent(d.dir.path(), "cut", &model(&mock));
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(mock.requests().len(), 1);
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let c = &calls[0];
    assert_eq!(c["estimated"], true, "{c}");
    assert_eq!(
        c["output_tokens"], 100,
        "400 characters received: 100 tokens"
    );
    assert_billed(&calls);
    let usage = &events_of(&doc, "usage")[0];
    assert_eq!(usage["estimated"], true, "{usage}");
    assert_eq!(usage["output_tokens"], 100);
    let text = d.ok(&["inspect-run", &id]);
    assert!(text.contains("(of which 1 call(s) estimated)"), "{text}");
    assert!(text.contains("[estimated; error:"), "{text}");
}

#[test]
fn a_run_stopped_mid_stream_bills_the_call_in_flight() {
    let d = Dispatch::new();
    let said = "thinking ".repeat(20);
    let mock = Mock::start(json!([{"kind": "stall", "text_before": said}]));
    let dir = native_agent(d.dir.path(), "stopped", &model(&mock));
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    eventually(20, "the answer has begun", || {
        d.ok(&["logs", &id]).contains("thinking thinking")
    });
    d.ok(&["stop", &id, "--grace-period-ms", "5000"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "cancelled", "{doc}");
    assert_eq!(mock.requests().len(), 1);
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let c = &calls[0];
    assert_eq!(c["finish_reason"], "stopped", "{c}");
    assert_eq!(c["estimated"], true, "{c}");
    assert_eq!(c["output_tokens"], 45, "180 characters received: 45 tokens");
    assert_billed(&calls);
    assert!(
        doc["usage"]["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "the run's spend counts it: {}",
        doc["usage"]
    );
}

#[test]
fn a_run_timed_out_mid_stream_bills_the_call_in_flight() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([{"kind": "stall", "text_before": "abcdefgh"}]));
    let dir = native_agent(d.dir.path(), "slowpoke", &model(&mock));
    let id = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--timeout",
        "1s",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "timed_out", "{doc}");
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), mock.requests().len(), "{calls:#?}");
    let c = &calls[0];
    assert_eq!(c["finish_reason"], "timed_out", "{c}");
    assert_eq!(c["estimated"], true, "{c}");
    assert_eq!(c["output_tokens"], 2, "8 characters received: 2 tokens");
    assert_billed(&calls);
}

/// No retry: the run ends with its helper, and the call that died with it
/// is billed by the reconciliation that ends the run.
#[test]
fn a_call_lost_with_a_helper_that_is_not_recovered_is_still_billed() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([{"kind": "stall", "text_before": "thinking"}]));
    let dir = native_agent(d.dir.path(), "fragile", &model(&mock));
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    eventually(20, "the call is in flight", || mock.requests().len() == 1);
    kill_helper(&d, &id);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let c = &calls[0];
    assert_eq!(c["finish_reason"], "lost", "{c}");
    assert_eq!(c["estimated"], true, "{c}");
    assert_billed(&calls);
    assert!(
        c["cost_usd"].as_f64().is_some_and(|v| v > 0.0),
        "priced from the sent call: {c}"
    );
    assert_eq!(doc["usage"]["cost_usd"], c["cost_usd"]);
}

/// A cut call's estimate (about 1000 prompt tokens) counts: the retry's
/// prompt would cross the limit, so it is not sent.
fn a_limit_counts_an_estimated_call(limit: &str, name: &str) {
    let d = Dispatch::new();
    // About 1000 prompt tokens at $1000 a million: $1 a call's prompt.
    let prompt = "word ".repeat(800);
    let mock = Mock::start(json!([{"kind": "cut", "text_before": "half"}]));
    let dir = native_agent(
        d.dir.path(),
        name,
        &format!(
            "{}\nPROMPT {prompt}\n{limit}\nRETRY 3 BACKOFF 100ms..1s",
            model(&mock)
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("budget_exceeded"), "{reason}");
    assert_eq!(
        mock.requests().len(),
        1,
        "{limit}: the cut call's estimate counts: no second call"
    );
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["estimated"], true);
}

#[test]
fn limit_cost_counts_an_estimated_call_and_stops_before_the_next() {
    a_limit_counts_an_estimated_call("LIMIT COST 1.5", "thrifty");
}

#[test]
fn limit_tokens_counts_an_estimated_call_and_stops_before_the_next() {
    a_limit_counts_an_estimated_call("LIMIT TOKENS 1500", "frugal");
}
