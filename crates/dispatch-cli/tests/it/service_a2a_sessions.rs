//! `serve --a2a --session-ttl`: an A2A context's session that no task used
//! for the TTL is removed (the service logs and records it), so the next
//! message of that context starts a new conversation; the sessions are
//! the ones `dispatch session ls` lists.

use crate::common;
use crate::service_a2a::{A2A_TOKEN, a2a_message, a2a_rpc};
use crate::service_common;

use common::{Dispatch, eventually};
use serde_json::{Value, json};
use service_common::Service;

/// Counts its turns in the session file; its output says which turn.
const TURNS: &str = "n=$(cat \"$DISPATCH_SESSION_FILE\" 2>/dev/null || echo 0)\n\
    n=$((n+1))\n\
    echo $n > \"$DISPATCH_SESSION_FILE\"\n\
    printf 'turn %s' \"$n\" > \"$DISPATCH_OUTPUT\"\n";

fn said(body: &Value) -> &str {
    body["result"]["artifacts"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a text artifact: {body:#}"))
}

fn in_context(text: &str, context: &str) -> Value {
    let mut m = a2a_message(text);
    m["message"]["contextId"] = json!(context);
    m
}

#[test]
fn a_contexts_session_unused_for_the_ttl_is_removed_and_its_next_task_starts_afresh() {
    let d = Dispatch::with_env(&[("A2A_TOKEN", A2A_TOKEN)]);
    let agent = d.agent_with(
        "keeper",
        TURNS,
        "SECRET A2A_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_SECRET A2A_TOKEN\n",
    );
    let svc = Service::start(&d, &agent, &["--a2a", "--session-ttl", "2s"]);
    let url = svc.url("/");

    let (_, first) = a2a_rpc(&url, "message/send", in_context("hello", "trip-1"));
    assert_eq!(said(&first), "turn 1", "{first:#}");
    // Expired once nothing used it for 2 s: the service says so.
    eventually(30, "the context's session expires", || {
        let log = d.ok(&["logs", &svc.id]);
        log.contains("session keeper/a2a-trip-1 expired")
    });
    assert_eq!(d.ok(&["session", "ls", "--format", "json"]), "[]");
    let events = d.ok(&["inspect-run", &svc.id, "--format", "json"]);
    assert!(events.contains("session_expired"), "{events}");

    // The next message of that context is a new conversation.
    let (_, again) = a2a_rpc(&url, "message/send", in_context("hello again", "trip-1"));
    assert_eq!(said(&again), "turn 1", "{again:#}");
    assert_eq!(again["result"]["contextId"], "trip-1");
    svc.stop(5_000);

    // The TTL is for A2A contexts only, and longer than zero.
    let plain = d.agent_with("plain", "true\n", "LISTEN 127.0.0.1:0\n");
    let p = plain.to_str().expect("utf-8");
    let err = d.fails(&["serve", p, "--public", "--session-ttl", "1h"], 125);
    assert!(err.contains("--session-ttl needs --a2a"), "{err}");
    let err = d.fails(
        &[
            "serve",
            &agent.to_string_lossy(),
            "--a2a",
            "--session-ttl",
            "soon",
        ],
        125,
    );
    assert!(err.contains("--session-ttl:"), "{err}");
}
