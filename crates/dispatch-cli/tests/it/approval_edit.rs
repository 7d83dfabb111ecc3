//! An approval that edits a tool call's input is recorded truthfully
//! (issue #35, item 6): the `tool_call` event and `inspect-run` say the
//! tool ran with the approver's input, beside the model's own request and
//! who edited it; and the model's next request tells it, before the tool's
//! output, that its input was changed and how. The run here suspends on
//! the approval (the durable wait), so the edit crosses a resume.

use crate::common;
use crate::native_common;

use common::{Dispatch, eventually};
use native_common::{Mock, events_of, message_texts, native_agent, refund_agent, text};
use serde_json::{Value, json};

const ASKED: &str = r#"{"order":"12345","amount":40}"#;
const EDITED: &str = r#"{"order":"12345","amount":20}"#;

/// `text` as this build prints JSON (key order included).
fn compact(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .expect("JSON")
        .to_string()
}

#[test]
fn an_edited_approval_records_what_ran_and_tells_the_model() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "12345", "amount": 40}, "id": "c0"}]},
        text("done", 1, 1),
    ]));
    let (dir, marks) = refund_agent(d.dir.path(), &mock.url(), "");
    let args = ["run", dir.to_str().expect("utf-8"), "--detach", "--job"];
    let out = d
        .command()
        .args(args)
        .arg(r#"{"ticket":"refund please"}"#)
        .output()
        .expect("run");
    let id = common::checks::ok(&args, &out);
    eventually(20, "the run pauses for the approval", || {
        d.status(&id) == "paused"
    });
    d.ok(&["approve", &id, "refund-1", "--by", "ada", "--input", EDITED]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let ran: Value = serde_json::from_str(&std::fs::read_to_string(&marks).expect("the tool ran"))
        .expect("json");
    assert_eq!(ran, json!({"order": "12345", "amount": 20}));

    // The model is told, before the tool's output, what ran instead.
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let told = message_texts(&reqs[1].body);
    let note = format!(
        "Note: an approver (ada) changed this call's input before it ran: {} (you asked for {}).",
        compact(EDITED),
        compact(ASKED)
    );
    let result = told
        .iter()
        .find(|t| t.contains("refunded"))
        .unwrap_or_else(|| panic!("the tool's result is sent: {told:?}"));
    assert!(
        result.starts_with(&note),
        "{result:?} should start with {note:?}"
    );

    // The event records what ran, what was asked, and who changed it.
    let call = events_of(&doc, "tool_call")
        .into_iter()
        .next()
        .expect("a tool_call event");
    assert_eq!(
        call["input"],
        json!({"order": "12345", "amount": 20}),
        "{call:#}"
    );
    assert_eq!(
        call["requested_input"],
        json!({"order": "12345", "amount": 40}),
        "{call:#}"
    );
    assert_eq!(call["edited_by"]["by"], "ada", "{call:#}");
    assert_eq!(call["edited_by"]["approval"], "refund-1", "{call:#}");
    assert!(call["edited_by"]["at"].as_i64().is_some(), "{call:#}");
    assert_eq!(
        call["output"], "refunded\n",
        "the tool's own output: {call:#}"
    );

    // inspect-run's tool calls, as JSON and for a person.
    let listed = &doc["tool_calls"][0];
    assert_eq!(
        listed["input"],
        json!({"order": "12345", "amount": 20}),
        "{listed:#}"
    );
    assert_eq!(
        listed["requested_input"],
        json!({"order": "12345", "amount": 40})
    );
    assert_eq!(listed["edited_by"]["by"], "ada");
    let human = d.ok(&["inspect-run", &id]);
    assert!(
        human.contains(&format!("input:  {}", compact(EDITED)))
            && human.contains(&format!("asked:  {}", compact(ASKED)))
            && human.contains("edited by ada (approval refund-1"),
        "{human}"
    );
}

#[test]
fn an_approval_without_an_edit_records_no_edit() {
    let d = Dispatch::new();
    let (mock, id) = paused_plain(&d, "plain", "MODEL gpt-4o-mini PROVIDER openai_chat", "c0");
    d.ok(&["approve", &id, "refund-1", "--by", "ada"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let call = &events_of(&doc, "tool_call")[0];
    assert_eq!(call["input"], json!({"amount": 40}));
    assert!(call.get("requested_input").is_none(), "{call:#}");
    assert!(call.get("edited_by").is_none(), "{call:#}");
    let told = message_texts(&mock.requests()[1].body)
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(told.iter().any(|t| t == "refunded\n"), "{told:?}");
    assert!(!told.iter().any(|t| t.contains("Note:")), "{told:?}");
}

#[test]
fn an_anthropic_model_reads_the_note_in_its_tool_result() {
    let d = Dispatch::new();
    let (mock, id) = paused_plain(
        &d,
        "claude",
        "MODEL claude-haiku-4-5 PROVIDER anthropic",
        "toolu_1",
    );
    d.ok(&[
        "approve",
        &id,
        "refund-1",
        "--by",
        "ada",
        "--input",
        r#"{"amount":20}"#,
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let results: Vec<&Value> = reqs[1].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 1, "{:#}", reqs[1].body);
    assert_eq!(results[0]["tool_use_id"], "toolu_1");
    assert_eq!(
        results[0]["content"],
        "Note: an approver (ada) changed this call's input before it ran: {\"amount\":20} (you asked for {\"amount\":40}).\n\nrefunded\n"
    );
}

/// A run of agent `name` (`model` line, a mock model asking for one
/// `refund` call with id `call`) paused for the call's approval.
fn paused_plain(d: &Dispatch, name: &str, model: &str, call: &str) -> (Mock, String) {
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"amount": 40}, "id": call}]},
        text("done", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        name,
        &format!(
            "{model} BASE_URL {}\nTOOL LOCAL refund.sh APPROVAL confirm",
            mock.url()
        ),
    );
    std::fs::write(dir.join("refund.sh"), "echo refunded\n").expect("tool");
    let id = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        "{}",
    ]);
    eventually(20, "the run pauses for the approval", || {
        d.status(&id) == "paused"
    });
    (mock, id)
}
