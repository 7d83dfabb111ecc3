//! `ON BUDGET pause` across a cluster (#37): `dispatch server --workers 0`
//! on PostgreSQL and a `dispatch worker`. A native agent that finds its
//! project over a hard budget pauses (no process, no slot); raising the
//! quota through the server resumes it on a worker, where it went on.

use crate::common;
use crate::native_common;
use crate::remote_common;

use native_common::{Mock, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

#[test]
fn a_paused_run_resumes_on_a_worker_when_the_server_raises_the_quota() {
    let Some(db) = postgres() else { return };
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "search", "arguments": {"q": "x"}}],
         "usage": {"input_tokens": 500, "output_tokens": 0}},
        text("done", 10, 2),
    ]));
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    client.ok(&["quota", "set", "team", "--tokens-per-day", "300"]);
    let dir = client.dir.path().join("spender");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME spender\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             ON BUDGET pause\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let _w = Worker::start(db.url(), "wa", &["--slots", "1"]);
    let id = client.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--project",
        "team",
    ]);
    let inspect = || -> Value {
        let all: Value =
            serde_json::from_str(&client.ok(&["inspect-run", &id, "--format", "json"]))
                .expect("inspect-run prints JSON");
        all[0].clone()
    };
    common::eventually(60, "the run pauses for its quota", || {
        inspect()["status"] == "paused"
    });
    assert_eq!(mock.requests().len(), 1, "no call over the budget");
    let doc = inspect();
    assert!(
        doc["state"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("project `team` is over its quota")),
        "{doc:#}"
    );
    client.ok(&["quota", "set", "team", "--tokens-per-day", "1M"]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    assert_eq!(mock.requests().len(), 2, "the call not made is made once");
    assert!(mock.requests()[1].body.to_string().contains("search"));
}
