//! `dispatch-bench batch [--dispatch PATH] [--runs N] [--database-url URL]`:
//! `--runs` (10,000) runs submitted to a `dispatch server` (no workers, so
//! only submission is measured) on a fresh PostgreSQL database, twice side
//! by side: one `POST /v1/runs` per run (sequential, as a script would),
//! then `POST /v1/runs/batch` with 1,000 runs per request. Prints runs/s.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use crate::service_cluster::{call, host_of};

pub fn main(dispatch: &Path, args: &[String]) {
    let runs: usize = crate::flag_value(args, "--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let db = crate::fresh_database(args, "batch");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Command::new(dispatch)
        .args(["server", "--listen", "127.0.0.1:0", "--workers", "0"])
        .args(["--database-url", db.url()])
        .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let base = format!("http://{}", host_of(&mut server));
    let upload = json!({"files": {"Agentfile": "FROM process\nNAME noop\nCOMMAND true\n"}});
    let (status, built) = call(&base, "POST", "/v1/parcels", Some(&upload));
    assert!(status < 300, "the parcel uploads: {built}");
    let digest = built["digest"].as_str().expect("a digest").to_string();
    let run = |i: usize| json!({"parcel": digest, "payload": {"i": i}});

    let t = Instant::now();
    for i in 0..runs {
        let (status, body) = call(&base, "POST", "/v1/runs", Some(&run(i)));
        assert_eq!(status, 201, "{body}");
    }
    let one_by_one = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut requests = 0;
    for start in (0..runs).step_by(1000) {
        let items: Vec<Value> = (start..(start + 1000).min(runs))
            .map(|i| run(runs + i))
            .collect();
        let (status, body) = call(
            &base,
            "POST",
            "/v1/runs/batch",
            Some(&json!({"runs": items})),
        );
        assert_eq!(status, 201, "{body}");
        requests += 1;
    }
    let batched = t.elapsed().as_secs_f64();
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "| {runs} runs submitted to one server (PostgreSQL, no workers) | requests | seconds | runs/s |\n|---|---|---|---|"
    );
    println!(
        "| one `POST /v1/runs` each | {runs} | {one_by_one:.2} | {:.0} |",
        runs as f64 / one_by_one
    );
    println!(
        "| `POST /v1/runs/batch`, 1,000 per request | {requests} | {batched:.2} | {:.0} |",
        runs as f64 / batched
    );
    println!("| ratio | | | {:.1}× |", one_by_one / batched);
}
