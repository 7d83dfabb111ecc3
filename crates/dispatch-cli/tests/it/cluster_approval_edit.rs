//! On a cluster (a server and a worker on PostgreSQL), an approval that
//! edits a tool call's input, decided through the server, is recorded
//! truthfully: the run resumes on the worker with the edited input, the
//! model is told, and the server's run page shows the input that ran and
//! who edited it, beside the model's request (issue #35, item 6).

use crate::native_common;
use crate::remote_common;

use native_common::{Mock, events_of, message_texts, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

fn page(server: &Server, path: &str) -> String {
    let base = format!("http://{}", server.host);
    let r = dispatch_server::client::request(&base, "GET", path, &[], None)
        .expect("the server answers");
    assert_eq!(r.status, 200, "{path}");
    r.text().expect("a page")
}

#[test]
fn an_edit_decided_through_the_server_is_what_ran_and_the_page_says_so() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _worker = Worker::start(db.url(), "w1", &[]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"amount": 40}, "id": "c0"}]},
        text("refunded", 1, 1),
    ]));
    let dir = client.dir.path().join("support");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME support\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             TOOL LOCAL refund.sh APPROVAL confirm RISK high\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let marks = tempfile::tempdir().expect("tempdir");
    let file = marks.path().join("refund");
    std::fs::write(
        dir.join("refund.sh"),
        format!("cat >> '{}'\necho refund-done\n", file.display()),
    )
    .expect("tool");
    let id = client.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        "{}",
    ]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["state"]["status"] == "suspended"
    });
    client.ok(&[
        "approve",
        &id,
        "refund-1",
        "--by",
        "ada",
        "--input",
        r#"{"amount":20}"#,
    ]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    let ran: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("ran")).expect("json");
    assert_eq!(ran, json!({"amount": 20}));

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let told = message_texts(&reqs[1].body);
    assert!(
        told.iter().any(|t| t.starts_with(
            r#"Note: an approver (ada) changed this call's input before it ran: {"amount":20} (you asked for {"amount":40})."#
        ) && t.contains("refund-done")),
        "{told:?}"
    );

    let doc = client.inspect(&id);
    let call = &events_of(&doc, "tool_call")[0];
    assert_eq!(call["input"], json!({"amount": 20}), "{call:#}");
    assert_eq!(call["requested_input"], json!({"amount": 40}), "{call:#}");
    assert_eq!(call["edited_by"]["by"], "ada", "{call:#}");
    assert_eq!(call["edited_by"]["approval"], "refund-1", "{call:#}");

    let html = page(&server, &format!("/ui/runs/{id}"));
    let tools = html
        .split("id=\"tool-calls\"")
        .nth(1)
        .expect("the page lists the tool calls");
    assert!(tools.contains("edited by ada"), "{tools}");
    assert!(tools.contains("&quot;amount&quot;: 20"), "{tools}");
    assert!(tools.contains("&quot;amount&quot;: 40"), "{tools}");
    let ran_at = tools.find("&quot;amount&quot;: 20").expect("shown");
    let asked_at = tools.find("&quot;amount&quot;: 40").expect("shown");
    assert!(ran_at < asked_at, "what ran comes first: {tools}");
}
