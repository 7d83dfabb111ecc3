//! A2A conversations: the tasks of one `contextId` run one after another
//! in one session of the served parcel, so a native agent remembers what
//! was said in the context's earlier tasks; a message without a context
//! starts a new one; a message naming a task (which never waits for input
//! here) says which context to continue; a context that cannot name a
//! session is a JSON-RPC error.

use crate::common;
use crate::native_common;
use crate::service_a2a::{A2A_TOKEN, a2a_message, a2a_model_line, a2a_rpc};
use crate::service_common;

use common::Dispatch;
use native_common::{Mock, message_texts, native_agent, text};
use serde_json::json;
use service_common::Service;

#[test]
fn the_tasks_of_one_context_share_a_conversation_and_other_contexts_do_not() {
    let d = Dispatch::with_env(&[("A2A_TOKEN", A2A_TOKEN)]);
    let model = Mock::start(json!([
        text("Noted: Lyon.", 7, 3),
        text("You said Lyon.", 9, 3),
        text("I do not know yet.", 9, 3),
    ]));
    let agent = native_agent(
        d.dir.path(),
        "planner",
        &format!(
            "{}\nSECRET A2A_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_SECRET A2A_TOKEN",
            a2a_model_line(&model)
        ),
    );
    let svc = Service::start(&d, &agent, &["--a2a"]);
    let url = svc.url("/");

    // A first message: a new context, given back with the task.
    let (code, body) = a2a_rpc(&url, "message/send", a2a_message("I am going to Lyon."));
    assert_eq!(code, 200, "{body}");
    let first = &body["result"];
    assert_eq!(first["status"]["state"], "completed", "{body:#}");
    let context = first["contextId"].as_str().expect("a context").to_string();
    let first_id = first["id"].as_str().expect("a task id").to_string();
    assert_ne!(context, "", "{body}");

    // The next message of that context is a new task in the same
    // conversation: the model sees the first exchange.
    let mut next = a2a_message("Where am I going?");
    next["message"]["contextId"] = json!(context);
    next["message"]["messageId"] = json!("m-2");
    let (_, body) = a2a_rpc(&url, "message/send", next);
    let second = &body["result"];
    assert_eq!(second["status"]["state"], "completed", "{body:#}");
    assert_eq!(second["contextId"], context.as_str());
    assert_ne!(second["id"], first_id.as_str(), "a new task");
    assert_eq!(second["artifacts"][0]["parts"][0]["text"], "You said Lyon.");
    let asked = model.requests();
    let said = message_texts(&asked[1].body);
    assert!(
        said.contains(&"I am going to Lyon.") && said.contains(&"Noted: Lyon."),
        "the context's earlier turn is in the conversation: {:#}",
        asked[1].body
    );
    // tasks/get says the context too.
    let (_, got) = a2a_rpc(&url, "tasks/get", json!({"id": first_id}));
    assert_eq!(got["result"]["contextId"], context.as_str(), "{got}");

    // Another context knows nothing of it.
    let mut other = a2a_message("Where am I going?");
    other["message"]["contextId"] = json!("trip-2");
    let (_, body) = a2a_rpc(&url, "message/send", other);
    assert_eq!(body["result"]["contextId"], "trip-2", "{body}");
    let asked = model.requests();
    let said = message_texts(&asked[2].body);
    assert!(!said.contains(&"I am going to Lyon."), "{said:?}");

    // Naming a task: it has ended; the error says how to go on.
    let mut again = a2a_message("And then?");
    again["message"]["taskId"] = json!(first_id);
    let (_, e) = a2a_rpc(&url, "message/send", again);
    let message = e["error"]["message"].as_str().expect("an error");
    assert!(
        message.contains("has ended") && message.contains(&format!("contextId {context}")),
        "{e}"
    );
    // A context that cannot name a session.
    let mut bad = a2a_message("hi");
    bad["message"]["contextId"] = json!("../../etc");
    let (_, e) = a2a_rpc(&url, "message/send", bad);
    assert_eq!(e["error"]["code"], -32602, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("contextId must be")),
        "{e}"
    );
    assert_eq!(
        model.requests().len(),
        3,
        "no model call for refused messages"
    );
    svc.stop(5_000);
}
