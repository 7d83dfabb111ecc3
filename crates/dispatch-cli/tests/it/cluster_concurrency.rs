//! Concurrency keys across a cluster: `dispatch server --workers 0` on
//! PostgreSQL and two `dispatch worker`s with four slots each; 20 runs of
//! three keys with `MAX 1` never run two of a key at once (checked from the
//! runs' attempt start and end times) and run in the order dispatched.

use crate::remote_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;

fn wait_done(client: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let doc = client.inspect(id);
        if doc["status"] == "succeeded" {
            return doc;
        }
        assert_ne!(doc["status"], "failed", "{doc:#}");
        assert!(
            Instant::now() < deadline,
            "run {id} did not finish: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_workers_never_run_two_runs_of_a_key_at_once() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let dir = client.agent_with(
        "keyed",
        "sleep 0.3\n",
        "CONCURRENCY KEY payload.customer MAX 1\n",
    );
    let _a = Worker::start(db.url(), "wa", &["--slots", "4"]);
    let _b = Worker::start(db.url(), "wb", &["--slots", "4"]);
    let ids: Vec<(String, String)> = (0..20)
        .map(|i| {
            let key = format!("c{}", i % 3);
            let job = format!(r#"{{"customer":"{key}"}}"#);
            (key, client.ok(&["run", &dir, "--detach", "--job", &job]))
        })
        .collect();
    let mut per_key: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut workers = HashMap::new();
    for (key, id) in &ids {
        let doc = wait_done(&client, id);
        assert_eq!(doc["concurrency"]["key"], format!("keyed/{key}"), "{doc:#}");
        let attempts = doc["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{doc:#}");
        let a = &attempts[0];
        *workers
            .entry(a["worker"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
        per_key.entry(key.clone()).or_default().push((
            a["started_at"].as_i64().expect("started"),
            a["ended_at"].as_i64().expect("ended"),
        ));
    }
    for (key, spans) in &per_key {
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "key {key}: two runs at once, or out of order: {spans:?}"
            );
        }
    }
    assert!(workers.len() == 2, "both workers took runs: {workers:?}");
}
