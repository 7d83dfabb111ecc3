//! `dispatch chat` driven through a pseudo-terminal, as a person would:
//! each line a turn streamed back, Ctrl-C stops the current turn, Ctrl-D
//! leaves, and the session's history survives leaving and coming back.

use crate::common;
use crate::native_common;

use std::time::Duration;

use common::{Dispatch, eventually};
use native_common::terminal::Terminal;
use native_common::{Mock, message_texts, native_agent, text};
use serde_json::json;

fn chat(d: &Dispatch, dir: &str) -> std::process::Command {
    let mut cmd = d.command();
    cmd.args(["chat", dir, "--session", "ada"]);
    cmd
}

#[test]
fn a_chat_streams_turns_ctrl_c_stops_one_ctrl_d_leaves_and_history_survives() {
    let d = Dispatch::new();
    let mut slow = text("too late", 1, 1);
    slow["delay_ms"] = json!(30_000);
    let mock = Mock::start(json!([
        text("Hi Ada, nice to meet you", 12, 6),
        slow,
        text("You said hello", 30, 4)
    ]));
    let dir = native_agent(
        d.dir.path(),
        "buddy",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nENTRYPOINT chat",
            mock.url()
        ),
    );
    let a = dir.to_str().expect("utf-8");

    let mut t = Terminal::open(chat(&d, a));
    t.wait_for("chatting with buddy in session ada");
    t.type_in("hello, I am Ada\n");
    t.wait_for("Hi Ada, nice to meet you");
    t.wait_for("succeeded");
    t.type_in("tell me something slow\n");
    eventually(20, "the slow turn reached the model", || {
        mock.requests().len() == 2
    });
    t.type_in("\x03");
    t.wait_for("cancelled");
    let before = t.count("> ");
    eventually(10, "a new prompt after the stopped turn", || {
        t.count("> ") > before || t.screen().ends_with("> ")
    });
    t.type_in("\x04");
    let status = t.child.wait().expect("chat exits");
    assert_eq!(status.code(), Some(0), "{}", t.screen());

    // Back again: the session remembers the first turn (not the stopped one).
    let mut t = Terminal::open(chat(&d, a));
    t.wait_for("chatting with buddy");
    t.type_in("what did I say?\n");
    t.wait_for("You said hello");
    t.type_in("\x04");
    assert_eq!(t.child.wait().expect("exits").code(), Some(0));
    let body = &mock.requests()[2].body;
    let texts = message_texts(body);
    assert_eq!(
        texts,
        [
            "hello, I am Ada",
            "Hi Ada, nice to meet you",
            "what did I say?"
        ],
        "{body}"
    );

    let ids = d.ok(&["ps", "-a", "-q"]);
    assert_eq!(ids.lines().count(), 3, "one run per turn");
    let last = d.inspect(ids.lines().next().expect("newest first"));
    assert_eq!(last["operation"], "chat");
    assert_eq!(
        last["conversation"]["messages"].as_array().map(Vec::len),
        Some(4)
    );
    let human = d.ok(&["inspect-run", last["id"].as_str().expect("id")]);
    assert!(
        human.contains("Conversation:") && human.contains("hello, I am Ada"),
        "{human}"
    );
    std::thread::sleep(Duration::from_millis(10));
}
