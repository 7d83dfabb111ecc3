//! A native agent's tool approval on a cluster is a durable wait: the run
//! suspended on one worker does not hold that worker's only slot (another
//! run completes meanwhile), and `dispatch approve --host` resumes it on
//! another worker (its own directory) without calling the model again or
//! running again the round's call that completed before the suspension.

use crate::native_common;
use crate::remote_common;

use native_common::{Mock, message_texts, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_native_approval_frees_the_slot_and_resumes_on_another_worker() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    // A lease long enough that a loaded CI host never lets it lapse while
    // the round runs: this test is about the approval, and a lapsed lease
    // re-runs the round's tools (tool calls are at least once).
    let mut first = Worker::start(db.url(), "first", &["--slots", "1", "--lease-ms", "10000"]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "lookup", "arguments": {"order": "12345"}, "id": "c0"},
            {"name": "refund", "arguments": {"order": "12345", "amount": 40}, "id": "c1"},
        ]},
        text("refunded", 1, 1),
    ]));
    let dir = client.dir.path().join("support");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME support\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             TOOL LOCAL lookup.sh\nTOOL LOCAL refund.sh APPROVAL confirm RISK high\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let marks = tempfile::tempdir().expect("tempdir");
    for tool in ["lookup", "refund"] {
        let file = marks.path().join(tool);
        std::fs::write(
            dir.join(format!("{tool}.sh")),
            format!(
                "cat >> '{}'\necho >> '{}'\necho {tool}-done\n",
                file.display(),
                file.display()
            ),
        )
        .expect("tool");
    }
    let id = client.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        r#"{"ticket":"refund please"}"#,
    ]);
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["state"]["status"] == "suspended"
    });
    assert_eq!(run["status"], "paused", "{run:#}");
    assert_eq!(run["state"]["wait"]["name"], "refund-1", "{run:#}");
    // The round's LOCAL tool ran once, or once more per attempt whose lease
    // lapsed before the round was saved (tool calls are at least once, and
    // a loaded CI host has lapsed a lease here): never unexplained.
    let lookups = lines(&marks.path().join("lookup"));
    let doc = client.inspect(&id);
    let lapsed = lapsed_attempts(&doc);
    assert!(
        (1..=1 + lapsed).contains(&lookups),
        "lookup ran {lookups} times with {lapsed} lapsed lease(s): {:#}\n{}",
        doc["attempts"],
        client.ok(&["logs", &id])
    );
    assert_eq!(lines(&marks.path().join("refund")), 0);
    let listed = client.ok(&["approvals", "ls"]);
    assert!(listed.contains("refund-1"), "{listed}");

    // The slot is free: the one-slot worker takes another run meanwhile.
    let other = client.agent("other", "echo other");
    let other_id = client.ok(&["run", &other, "--detach"]);
    assert_eq!(client.ok(&["wait", &other_id]), "0");

    // The first worker goes away; a second one resumes the run on approval.
    first.child.kill().expect("kill the first worker");
    first.child.wait().expect("reap it");
    let _second = Worker::start(db.url(), "second", &["--slots", "1", "--lease-ms", "10000"]);
    client.ok(&["approve", &id, "refund-1", "--by", "ana"]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    let doc = client.inspect(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2 + lapsed, "{doc:#}");
    assert_eq!(attempts[0]["worker"], "first", "{doc:#}");
    assert_eq!(attempts[1 + lapsed]["worker"], "second", "{doc:#}");
    assert_eq!(
        lines(&marks.path().join("lookup")),
        lookups,
        "not run again"
    );
    assert_eq!(lines(&marks.path().join("refund")), 1, "run once, approved");
    // The model is not called again for the round; a call cut off by a
    // lapsed lease before its answer was saved is sent again (and billed
    // as cut), once per lapse at most.
    let reqs = mock.requests();
    assert!(
        (2..=2 + lapsed).contains(&reqs.len()),
        "{} model requests with {lapsed} lapsed lease(s)",
        reqs.len()
    );
    let told = message_texts(&reqs.last().expect("a request").body);
    assert!(
        told.iter().any(|t| t.contains("lookup-done"))
            && told.iter().any(|t| t.contains("refund-done")),
        "{told:?}"
    );
}

/// How many of the run's attempts ended because their lease lapsed.
fn lapsed_attempts(doc: &Value) -> usize {
    doc["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["error"]
                .as_str()
                .is_some_and(|e| e.contains("lease expired"))
        })
        .count()
}
