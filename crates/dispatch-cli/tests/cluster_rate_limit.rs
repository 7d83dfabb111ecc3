//! `RATE_LIMIT` across a cluster: `dispatch server --workers 0` on
//! PostgreSQL and two `dispatch worker`s with five slots each run ten
//! native runs at once against the scripted mock model server; the bucket
//! lives in the database, so together they never send more than the limit
//! in any window. Scaled down as `native_rate_limit.rs` is: `REQUESTS 5/5s`,
//! windows checked 300 ms shorter than the limit's (delivery jitter).

mod native_common;
mod remote_common;

use std::time::{Duration, Instant};

use native_common::Mock;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

fn wait_done(client: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
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
fn two_workers_share_one_models_request_limit() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([]));
    let dir = client.dir.path().join("limited");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME limited\nMODEL gpt-4o-mini PROVIDER openai BASE_URL {}\nRATE_LIMIT MODEL gpt-4o-mini REQUESTS 5/5s\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let _a = Worker::start(db.url(), "wa", &["--slots", "5"]);
    let _b = Worker::start(db.url(), "wb", &["--slots", "5"]);
    let path = dir.to_str().expect("utf-8");
    let ids: Vec<String> = (0..10)
        .map(|i| client.ok(&["run", path, "--detach", "--job", &format!(r#"{{"n":{i}}}"#)]))
        .collect();
    let mut waited = 0;
    let mut workers = std::collections::HashSet::new();
    for id in &ids {
        let doc = wait_done(&client, id);
        workers.insert(
            doc["attempts"][0]["worker"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
        waited += doc["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["type"] == "rate_limit_wait")
            .count();
    }
    let mut at: Vec<u64> = mock.requests().iter().map(|r| r.received_at_us).collect();
    assert_eq!(at.len(), 10, "one call per run");
    at.sort();
    const WINDOW_US: u64 = 5_000_000 - 300_000;
    for (i, t) in at.iter().enumerate() {
        let inside = at[..=i].iter().filter(|s| **s + WINDOW_US > *t).count();
        assert!(
            inside <= 5,
            "{inside} requests within 5 s up to request {i}: {at:?}"
        );
    }
    assert!(waited >= 5, "the calls that waited say so ({waited})");
    assert_eq!(workers.len(), 2, "both workers ran some: {workers:?}");
}
