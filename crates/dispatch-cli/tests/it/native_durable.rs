//! A native agent is durable step by step: a helper killed mid-run is
//! recovered, and the next attempt resumes after the last completed round
//! without repeating a model call.

use crate::common;
use crate::native_common;

use common::{Dispatch, alive, eventually};
use native_common::{Mock, message_texts, model_calls, native_agent, text, tool};
use serde_json::json;

#[test]
fn kill_9_of_the_helper_in_round_3_of_4_resumes_at_round_3_without_repeating_a_call() {
    let d = Dispatch::new();
    let mut slow = tool("lookup");
    slow["delay_ms"] = json!(60_000);
    let mock = Mock::start(json!([
        tool("lookup"),
        tool("lookup"),
        slow,
        tool("lookup"),
        text("all done", 9, 2)
    ]));
    let dir = native_agent(
        d.dir.path(),
        "durable",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nRETRY 3 BACKOFF 100ms..1s",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    eventually(20, "the third model call is in flight", || {
        mock.requests().len() == 3
    });
    let doc = d.inspect(&id);
    let helper = doc["state"]["helper"]["pid"].as_u64().expect("helper pid") as u32;
    assert_eq!(
        model_calls(&doc).len(),
        2,
        "two rounds completed and recorded"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    eventually(10, "the helper is gone", || !alive(helper));
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "all done");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 5, "r1, r2, r3 (lost), r3 again, r4");
    // The resumed attempt's first request carries rounds 1 and 2: it is the lost one's twin.
    assert_eq!(reqs[3].body, reqs[2].body, "resumed at round 3");
    let bodies: Vec<&serde_json::Value> = reqs.iter().map(|r| &r.body).collect();
    for (i, b) in bodies.iter().enumerate().take(2) {
        assert_eq!(
            bodies.iter().filter(|x| **x == *b).count(),
            1,
            "completed call {} never repeated",
            i + 1
        );
    }
    // Every request sent has its record: the lost one is billed, estimated,
    // under the attempt that sent it.
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), reqs.len(), "{calls:#?}");
    let numbers: Vec<u64> = calls.iter().filter_map(|c| c["call"].as_u64()).collect();
    assert_eq!(numbers, [1, 2, 3, 3, 4]);
    assert_eq!(calls[2]["attempt"], 1);
    assert_eq!(calls[2]["finish_reason"], "lost");
    assert_eq!(calls[2]["estimated"], true);
    assert!(calls[2]["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(calls[3]["attempt"], 2);
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
}

#[test]
fn stop_cancels_a_native_run_mid_call() {
    let d = Dispatch::new();
    let mut slow = text("never", 1, 1);
    slow["delay_ms"] = json!(60_000);
    let mock = Mock::start(json!([slow]));
    let dir = native_agent(
        d.dir.path(),
        "stoppable",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    eventually(20, "the call is in flight", || mock.requests().len() == 1);
    d.ok(&["stop", &id, "--grace-period-ms", "5000"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "cancelled", "{doc}");
}

#[test]
fn a_native_service_answers_each_wake_as_a_turn_whose_message_is_the_envelope() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("woke and checked", 8, 3)]));
    let dir = native_agent(
        d.dir.path(),
        "watcher",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let svc = d.ok(&["serve", dir.to_str().expect("utf-8"), "--detach"]);
    let hb = d.ok(&["wake", &svc, r#"{"check":"disk"}"#]);
    let doc = d.wait_terminal(&hb);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["operation"], "heartbeat");
    assert_eq!(doc["output"], "woke and checked");
    let body = &mock.requests()[0].body;
    let user = body["messages"][0]["content"].as_str().expect("user text");
    let envelope: serde_json::Value = serde_json::from_str(user).expect("the envelope, as JSON");
    assert_eq!(envelope["wake"]["reason"], "manual", "{user}");
    assert_eq!(envelope["payload"]["check"], "disk", "{user}");
    d.ok(&["stop", &svc]);
    assert_eq!(d.wait_terminal(&svc)["status"], "stopped");
}

#[test]
fn a_native_run_that_fails_after_its_tool_rounds_is_dead_lettered_with_its_whole_conversation() {
    // The attempt keeps no copy of its conversation: the dead letter folds
    // the checkpoints the store has (a whole one, then deltas).
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        tool("lookup"),
        tool("lookup"),
        {"kind": "error", "status": 400, "message": "this request is refused"}
    ]));
    let dir = native_agent(
        d.dir.path(),
        "refused",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL lookup.sh",
            mock.url()
        ),
    );
    std::fs::write(dir.join("lookup.sh"), "echo 'order: shipped'\n").expect("tool");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["dlq", "ls", "--format", "json"])).expect("JSON");
    let checkpoint = &list[0]["checkpoint"];
    assert_eq!(checkpoint["step"], "round-2", "{list:#}");
    let messages = checkpoint["state"]["messages"]
        .as_array()
        .expect("the whole conversation");
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant", "tool"],
        "{checkpoint:#}"
    );
    assert!(
        messages[4]["content"]
            .as_str()
            .is_some_and(|t| t.contains("order: shipped")),
        "{checkpoint:#}"
    );
}

/// While the model works, the run's record lets its copy of the input go
/// (its conversation holds it, issue #38 item 2): an attempt that ends
/// before any round completes is followed by one that starts the
/// conversation from the input again, whole, and the run keeps it.
#[test]
fn an_attempt_timed_out_on_its_first_call_is_retried_with_the_whole_input() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([{"kind": "stall"}, text("done", 3, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "stalls",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTIMEOUT RUN 1s\nRETRY 2 BACKOFF 10ms..10ms",
            mock.url()
        ),
    );
    let input = "summarize order 12345 ".repeat(200);
    let id = d.detach(&dir, &serde_json::to_string(&input).expect("JSON"));
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["attempt"], 2, "the timed-out attempt was retried");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    for (n, req) in reqs.iter().enumerate() {
        assert_eq!(
            message_texts(&req.body).last(),
            Some(&input.as_str()),
            "request {n} asks with the whole input"
        );
    }
    assert_eq!(doc["payload"], json!(input), "the run keeps its input");
}
