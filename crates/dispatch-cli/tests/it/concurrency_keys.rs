//! Concurrency keys on the local runtime (no server, no worker): detached
//! runs of a key beyond its MAX wait queued, in order, and start when a slot
//! frees; `STRATEGY drop` cancels a run at once, `cancel-in-progress` stops
//! the oldest; a payload without the key's path is refused; the key shows in
//! `inspect-run`.

use crate::common;

use std::collections::HashMap;

use common::{Dispatch, eventually};
use serde_json::Value;

/// (started_at, ended_at) of a finished run's only attempt.
pub fn span(doc: &Value) -> (i64, i64) {
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{doc:#}");
    let a = &attempts[0];
    (
        a["started_at"].as_i64().expect("started"),
        a["ended_at"].as_i64().expect("ended"),
    )
}

/// Asserts that no two runs of one key overlapped and that each key's runs
/// started in the order they were dispatched.
pub fn assert_one_at_a_time(runs: &[(String, (i64, i64))]) {
    let mut per_key: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for (key, s) in runs {
        per_key.entry(key).or_default().push(*s);
    }
    for (key, spans) in per_key {
        for pair in spans.windows(2) {
            let ((_, end), (start, _)) = (pair[0], pair[1]);
            assert!(
                end <= start,
                "key {key}: a run started at {start} while the one before it ran until {end}: {spans:?}"
            );
        }
    }
}

#[test]
fn twenty_runs_of_three_keys_never_run_two_of_a_key_at_once() {
    let d = Dispatch::new();
    let dir = d.agent_with(
        "keyed",
        "sleep 0.2\n",
        "CONCURRENCY KEY payload.customer MAX 1\n",
    );
    let ids: Vec<(String, String)> = (0..20)
        .map(|i| {
            let key = format!("c{}", i % 3);
            let id = d.detach(&dir, &format!(r#"{{"customer":"{key}"}}"#));
            (key, id)
        })
        .collect();
    let mut runs = Vec::new();
    for (key, id) in &ids {
        let doc = d.wait_terminal(id);
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
        assert_eq!(doc["concurrency"]["key"], format!("keyed/{key}"), "{doc:#}");
        assert_eq!(doc["concurrency"]["max"], 1);
        runs.push((key.clone(), span(&doc)));
    }
    assert_one_at_a_time(&runs);
    let human = d.ok(&["inspect-run", &ids[0].1]);
    assert!(
        human.contains("Concurrency: keyed/c0 (max 1, queue)"),
        "{human}"
    );
}

#[test]
fn drop_cancels_at_once_and_cancel_in_progress_stops_the_oldest() {
    let d = Dispatch::new();
    let dropping = d.agent_with(
        "dropping",
        "sleep 30\n",
        "CONCURRENCY KEY payload.k MAX 1 STRATEGY drop\n",
    );
    let first = d.detach(&dropping, r#"{"k":"a"}"#);
    eventually(20, "the first run to start", || {
        d.status(&first) == "running"
    });
    let dropped = d.detach(&dropping, r#"{"k":"a"}"#);
    let doc = d.inspect(&dropped);
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("dropped") && reason.contains("STRATEGY drop"),
        "{reason}"
    );
    // Another key is not affected.
    let other = d.detach(&dropping, r#"{"k":"b"}"#);
    eventually(20, "the other key's run to start", || {
        d.status(&other) == "running"
    });
    d.ok(&["stop", &first, &other]);

    let replacing = d.agent_with(
        "replacing",
        "sleep \"${SLEEP:-30}\"\n",
        "CONCURRENCY KEY payload.k MAX 1 STRATEGY cancel-in-progress\n",
    );
    let old = d.detach(&replacing, r#"{"k":"a"}"#);
    eventually(20, "the old run to start", || d.status(&old) == "running");
    let new = d.detach(&replacing, r#"{"k":"a"}"#);
    let old_doc = d.wait_terminal(&old);
    assert_eq!(old_doc["status"], "cancelled", "{old_doc:#}");
    eventually(20, "the new run to start", || d.status(&new) == "running");
    let new_doc = d.inspect(&new);
    let started = new_doc["attempts"][0]["started_at"]
        .as_i64()
        .expect("started");
    assert!(
        old_doc["attempts"][0]["ended_at"].as_i64().expect("ended") <= started,
        "the new run started only once the old one ended"
    );
    d.ok(&["stop", &new]);
}

#[test]
fn a_payload_without_the_key_is_refused_and_a_key_can_be_given_per_run() {
    let d = Dispatch::new();
    let dir = d.agent_with(
        "keyed",
        "true\n",
        "CONCURRENCY KEY payload.customer.id MAX 2\n",
    );
    let path = dir.to_str().expect("utf-8");
    let out = d.run(&["run", path, "--detach", "--job", r#"{"customer":{}}"#]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the payload has no `customer.id`"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(d.ok(&["ps", "-a", "-q"]).is_empty(), "nothing was stored");

    // --concurrency-key gives the value; a plain parcel gets a key per run.
    let id = d.ok(&[
        "run",
        path,
        "--detach",
        "--job",
        "{}",
        "--concurrency-key",
        "vip",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["concurrency"]["key"], "keyed/vip");
    assert_eq!(doc["concurrency"]["max"], 2);
    let plain = d.agent("plain", "true\n");
    let plain = plain.to_str().expect("utf-8");
    let id = d.ok(&[
        "run",
        plain,
        "--detach",
        "--concurrency-key",
        "x",
        "--concurrency-strategy",
        "drop",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["concurrency"]["key"], "plain/x");
    assert_eq!(doc["concurrency"]["strategy"], "drop");
    for (args, want) in [
        (vec!["--concurrency-max", "0"], "at least 1"),
        (
            vec!["--concurrency-strategy", "newest"],
            "unknown concurrency strategy",
        ),
        (
            vec!["--concurrency-max", "2"],
            "declares no CONCURRENCY KEY",
        ),
    ] {
        let mut all = vec!["run", plain, "--detach"];
        all.extend(args);
        let out = d.run(&all);
        assert_ne!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{all:?}: {stderr}");
    }
}

#[test]
fn a_run_waiting_for_a_slot_whose_helper_was_killed_starts_when_a_reader_looks() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let dir = d.agent_with(
        "gated",
        &format!("while [ ! -e '{}' ]; do sleep 0.02; done\n", gate.display()),
        "CONCURRENCY KEY payload.k MAX 1\n",
    );
    let first = d.detach(&dir, r#"{"k":"a","n":1}"#);
    let second = d.detach(&dir, r#"{"k":"a","n":2}"#);
    // The second run's helper waits for the key's only slot; kill -9 it.
    let waiter = d.root().join("runs").join(&second).join("slot-waiter.json");
    eventually(20, "the second run's helper to wait for a slot", || {
        waiter.exists()
    });
    let doc: Value = serde_json::from_slice(&std::fs::read(&waiter).expect("read")).expect("JSON");
    let pid = doc["pid"].as_u64().expect("a pid") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the waiting helper");
    eventually(20, "the waiting helper to be gone", || !common::alive(pid));
    assert_eq!(d.status(&second), "queued", "still waiting for the slot");
    std::fs::write(&gate, "").expect("open the gate");
    let done = d.wait_terminal(&first);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    // A reader (`wait`, `inspect-run`, `ps`) finds the dead waiter and
    // starts a helper that takes the freed slot.
    let doc = d.wait_terminal(&second);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_one_at_a_time(&[("a".into(), span(&done)), ("a".into(), span(&doc))]);
}
