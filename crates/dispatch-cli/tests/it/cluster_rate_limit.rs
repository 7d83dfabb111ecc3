//! `RATE_LIMIT` across a cluster: `dispatch server --workers 0` on
//! PostgreSQL and two `dispatch worker`s with five slots each run ten
//! native runs at once against the scripted mock model server; the bucket
//! lives in the database, so together they never send more than the limit
//! in any window. Scaled down as `native_rate_limit.rs` is: `REQUESTS 5/5s`,
//! windows checked 300 ms shorter than the limit's (delivery jitter).
//! Once with the buckets in the database, once in Redis
//! (`--rate-limit-store redis://127.0.0.1:6379`; skipped without Redis
//! there, except under `CI=true`, where that fails).

use crate::native_common;
use crate::remote_common;

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
    share_one_limit(db.url(), &[], "gpt-4o-mini");
}

#[test]
fn two_workers_share_one_models_request_limit_in_redis() {
    let Some(db) = postgres() else { return };
    if !redis_is_up() {
        return;
    }
    // A model of its own: the keys of other runs of this test stay apart.
    let model = format!("mini-{}-{}", std::process::id(), dispatch_core::now_ms());
    share_one_limit(
        db.url(),
        &["--rate-limit-store", "redis://127.0.0.1:6379"],
        &model,
    );
}

fn redis_is_up() -> bool {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_ok() {
        return true;
    }
    let how = "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''`";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Redis is not running on 127.0.0.1:6379 ({how})"
    );
    eprintln!("skipping: Redis is not running on 127.0.0.1:6379 ({how})");
    false
}

#[test]
fn a_rate_limit_store_that_cannot_be_used_refuses_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("not a url", "is not a Redis URL"),
        (
            "redis://127.0.0.1:1",
            "cannot reach Redis at redis://127.0.0.1:1",
        ),
    ];
    for command in ["server", "worker"] {
        for (url, expected) in cases {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
                .arg(command)
                .args(if command == "server" {
                    &["--listen", "127.0.0.1:0"][..]
                } else {
                    &[][..]
                })
                .args(["--rate-limit-store", url])
                .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
                .env_remove("DISPATCH_DATABASE_URL")
                .env_remove("DISPATCH_HOST")
                .stdin(std::process::Stdio::null())
                .output()
                .expect("dispatch runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{command} {url}: {stderr}");
            assert!(stderr.contains(expected), "{command} {url}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
    }
}

/// Ten runs on two five-slot workers (started with `worker_args`) under
/// `RATE_LIMIT MODEL <model> REQUESTS 5/5s`.
fn share_one_limit(db_url: &str, worker_args: &[&str], model: &str) {
    let server = Server::start_on(Some(db_url), &["--workers", "0"]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([]));
    let dir = client.dir.path().join("limited");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME limited\nMODEL {model} PROVIDER openai_chat BASE_URL {}\nRATE_LIMIT MODEL {model} REQUESTS 5/5s\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let args: Vec<&str> = ["--slots", "5"]
        .iter()
        .chain(worker_args)
        .copied()
        .collect();
    let _a = Worker::start(db_url, "wa", &args);
    let _b = Worker::start(db_url, "wb", &args);
    let path = dir.to_str().expect("utf-8");
    let ids: Vec<String> = (0..10)
        .map(|i| client.ok(&["run", path, "--detach", "--job", &format!(r#"{{"n":{i}}}"#)]))
        .collect();
    // While some wait, `ps` says for what.
    let said = format!("rate limit {model}: next call in ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: Value =
            serde_json::from_str(&client.ok(&["ps", "--format", "json"])).expect("ps json");
        let waiting = listed.as_array().is_some_and(|l| {
            l.iter()
                .any(|r| r["waiting"].as_str().is_some_and(|w| w.starts_with(&said)))
        });
        if waiting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no run said it waits for the limit: {listed:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    // A second of slack for a grant reaching the mock late on a loaded
    // machine; without a shared limit all ten would come within a second.
    const WINDOW_US: u64 = 5_000_000 - 1_000_000;
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
