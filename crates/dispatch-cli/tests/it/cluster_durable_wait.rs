//! Durable waits on a cluster: a run suspended on one worker holds no process
//! and no slot; a signal through the server's API resumes it on another
//! worker (with its own directory) with the signal's value and checkpoint.

use crate::common;
use crate::remote_common;

use common::eventually;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::json;

/// Processes whose environment names run `id` (its agent and anything it started).
fn agents_of(id: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| String::from_utf8_lossy(&env).contains(&format!("DISPATCH_RUN_ID={id}")))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn a_run_suspended_on_one_worker_resumes_on_another_with_the_signals_value() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let mut first = Worker::one_slot(db.url(), "first");
    let client = Client::new(&server);
    let dir = client.agent(
        "waiter",
        "echo \"output of attempt $DISPATCH_ATTEMPT\"\n\
         if [ -z \"$DISPATCH_RESUME\" ]; then\n\
           echo '{\"type\":\"checkpoint\",\"step\":\"asked\",\"state\":{\"n\":1}}' >> \"$DISPATCH_EVENTS\"\n\
           echo '{\"type\":\"wait\",\"for\":\"signal\",\"name\":\"paid\"}' >> \"$DISPATCH_EVENTS\"\n\
           exit 0\n\
         fi\n\
         cp \"$DISPATCH_RESUME\" \"$DISPATCH_OUTPUT\"\n\
         cat \"$DISPATCH_CHECKPOINT\"\n",
    );
    let id = client.ok(&["run", &dir, "--detach"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["state"]["status"] == "suspended"
    });
    let ps = client.ok(&["ps"]);
    assert!(ps.contains("paused: waiting for signal `paid`"), "{ps}");
    eventually(5, "no agent process of the run is left", || {
        agents_of(&id) == 0
    });
    // The slot is free: the one-slot worker takes another run meanwhile.
    let other = client.agent("other", "echo other");
    let other_id = client.ok(&["run", &other, "--detach"]);
    assert_eq!(client.ok(&["wait", &other_id]), "0");

    // The first worker goes away; a second one, with its own directory, resumes it.
    first.child.kill().expect("kill the first worker");
    first.child.wait().expect("reap it");
    let _second = Worker::one_slot(db.url(), "second");
    // Well past any lease: still suspended, still its first attempt.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let doc = client.inspect(&id);
    assert_eq!(doc["state"]["status"], "suspended", "{doc:#}");
    assert_eq!(doc["attempt"], 1, "{doc:#}");
    let out = client.run(&["signal", &id[..24], "paid", "--value", r#"{"amount":7}"#]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("woke"),
        "{out:?}"
    );
    assert_eq!(client.ok(&["wait", &id]), "0");
    let doc = client.inspect(&id);
    assert_eq!(
        doc["output"],
        json!({"for": "signal", "name": "paid", "value": {"amount": 7}}),
        "{doc:#}"
    );
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{doc:#}");
    assert_eq!(attempts[0]["worker"], "first", "{doc:#}");
    assert_eq!(attempts[1]["worker"], "second", "{doc:#}");
    let log = client.ok(&["logs", &id]);
    assert!(
        log.contains(r#""step":"asked""#),
        "the checkpoint came along: {log}"
    );
    // `logs --attempt N` through --host: the store's attempt numbers, though
    // the woken attempt 2 counts as 1 against the retries.
    for (n, other) in [(1, 2), (2, 1)] {
        let section = client.ok(&["logs", &id, "--attempt", &n.to_string()]);
        assert!(
            section.starts_with(&format!("[dispatch] attempt {n} ")),
            "attempt {n}'s section starts at its line: {section}"
        );
        assert!(
            section.contains(&format!("output of attempt {n}"))
                && !section.contains(&format!("output of attempt {other}")),
            "attempt {n}'s section holds its output only: {section}"
        );
    }

    // A signal to a finished run is a 409 with the error shape.
    let (status, body) = server.call(
        "POST",
        &format!("/v1/runs/{id}/signal"),
        Some(&json!({"name": "paid"})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("already succeeded"))
    );
    let (status, body) = server.call(
        "POST",
        &format!("/v1/runs/{id}/signal"),
        Some(&json!({"nome": "paid"})),
    );
    assert_eq!(status, 400, "{body}");
}
