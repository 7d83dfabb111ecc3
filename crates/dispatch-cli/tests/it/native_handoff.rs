//! A native agent's courier tools against the scripted mock model server:
//! `send_message` records exactly the `message` event a process agent
//! writes; `handoff` starts a built parcel as an upstream run linked to the
//! agent's run; a handoff to an unknown parcel is the tool call's error,
//! which the model sees, with a warning and an error event in the log.

use crate::common;
use crate::native_common;

use common::Dispatch;
use native_common::{Mock, events_of, message_texts, native_agent, text};
use serde_json::{Value, json};

fn call(name: &str, args: Value) -> Value {
    json!({"kind": "tool_calls", "calls": [{"name": name, "arguments": args, "id": "c0"}]})
}

#[test]
fn send_message_and_handoff_record_the_process_agents_events_and_start_the_run() {
    let d = Dispatch::new();
    let billing = d.agent(
        "billing",
        "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_OUTPUT\"\n",
    );
    d.ok(&["build", billing.to_str().expect("utf-8")]);
    let mock = Mock::start(json!([
        call(
            "send_message",
            json!({"to": "writer", "kind": "VALIDATION", "payload": {"ok": false}})
        ),
        call("send_message", json!({"to": "analyst"})),
        call(
            "handoff",
            json!({"parcel": "billing", "payload": {"invoice": 7}})
        ),
        call("handoff", json!({"parcel": "nosuch"})),
        text("Handed off.", 10, 5),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "router",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL BUILTIN send_message handoff",
            mock.url()
        ),
    );
    let id = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        "{}",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");

    // Exactly what `{"type":"message",…}` in $DISPATCH_EVENTS records.
    let messages = events_of(&doc, "message");
    assert_eq!(
        messages,
        vec![
            json!({"type": "message", "to": "writer", "kind": "VALIDATION", "payload": {"ok": false}}),
            json!({"type": "message", "to": "analyst", "kind": "RESULT", "payload": {}}),
        ]
    );
    let handoffs = events_of(&doc, "handoff");
    assert_eq!(handoffs.len(), 1, "{doc:#}");
    assert_eq!(handoffs[0]["parcel"], "billing");
    assert_eq!(handoffs[0]["payload"], json!({"invoice": 7}));
    let new_id = handoffs[0]["run_id"].as_str().expect("the run it started");

    let new = d.wait_terminal(new_id);
    assert_eq!(new["trigger"], "upstream", "{new:#}");
    assert_eq!(new["origin_id"], id.as_str());
    assert_eq!(new["output"], json!({"invoice": 7}));

    // The unknown parcel: the tool call failed, the model was told, the log says so.
    let tool_calls = events_of(&doc, "tool_call");
    assert_eq!(tool_calls.len(), 4, "{tool_calls:#?}");
    assert!(
        tool_calls[..3].iter().all(|c| c["ok"] == true),
        "{tool_calls:#?}"
    );
    assert_eq!(tool_calls[3]["ok"], false);
    let why = tool_calls[3]["output"].as_str().expect("output");
    assert!(why.contains("handoff to unknown parcel `nosuch`"), "{why}");
    let reqs = mock.requests();
    let last = message_texts(&reqs[4].body).join("\n");
    assert!(last.contains("unknown parcel `nosuch`"), "{last}");
    let errors = events_of(&doc, "error");
    assert_eq!(errors.len(), 1, "{doc:#}");
    assert!(
        events_of(&doc, "warning").iter().any(|w| w["message"]
            .as_str()
            .is_some_and(|m| m.contains("started nothing"))),
        "{doc:#}"
    );
    // The tools as the model saw them.
    let tools: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(tools, vec!["send_message", "handoff"]);
}
