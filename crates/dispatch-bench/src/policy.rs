//! `dispatch-bench policy [--dispatch PATH] [--calls N] [--runs N] [--rounds N] [--database-url URL]`:
//! what a Rego policy costs (issue #37).
//!
//! 1. Evaluation: `--calls` (20,000) `tool_call` and `create_run` decisions
//!    of the policy in `docs/policy.md`, in this process: p50 / p99 µs,
//!    and the time to load (parse, check, trial) it.
//! 2. Submission side by side: a `dispatch server` (no workers) on a fresh
//!    PostgreSQL database, `--runs` (10,000) runs through
//!    `POST /v1/runs/batch` (1,000 a request), with the policy on and off,
//!    alternating for `--rounds` (3) rounds. Prints runs/s of each.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use dispatch_policy::{Policy, input};
use serde_json::{Value, json};

use crate::service_cluster::{call, host_of};

const POLICY: &str = r#"package dispatch

deny contains "prod-deploy runs only from the release pipeline" if {
    input.action == "create_run"
    input.parcel.name == "prod-deploy"
    input.trigger != "upstream"
}

modify := {"labels": {"pool": "batch"}, "limit_cost_usd": 0.50} if {
    input.action == "create_run"
    input.operation == "heartbeat"
}

deny contains sprintf("%s may not run shell", [input.who.name]) if {
    input.action == "tool_call"
    input.tool == "shell"
}

require_approval contains "high-risk tools need a person" if {
    input.action == "tool_call"
    input.risk == "high"
}

auto_approve contains "refunds up to 20 EUR are approved by rule" if {
    input.action == "tool_call"
    input.tool == "refund"
    input.arguments.amount <= 20
}
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn timed(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut us: Vec<f64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    (percentile(&us, 0.5), percentile(&us, 0.99))
}

pub fn main(dispatch: &Path, args: &[String]) {
    let calls: usize = crate::flag_value(args, "--calls")
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let runs: usize = crate::flag_value(args, "--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let rounds: usize = crate::flag_value(args, "--rounds")
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, POLICY).expect("write the policy");

    let (load50, load99) = timed(50, |_| {
        Policy::load(&file).expect("the policy loads");
    });
    let policy = Policy::load(&file).expect("the policy loads");
    let mut tool = input::sample_tool_call();
    tool["tool"] = json!("refund");
    let (tool50, tool99) = timed(calls, |i| {
        tool["arguments"] = json!({"order": "12345", "amount": i % 40});
        policy.decide_tool(&tool).expect("decides");
    });
    let run = input::sample_run();
    let (run50, run99) = timed(calls, |_| {
        policy.decide_run(&run).expect("decides");
    });
    println!(
        "policy load (parse, check, trial): p50 {load50:.0} µs, p99 {load99:.0} µs (50 loads)"
    );
    println!("tool_call decision: p50 {tool50:.1} µs, p99 {tool99:.1} µs ({calls} calls)");
    println!("create_run decision: p50 {run50:.1} µs, p99 {run99:.1} µs ({calls} decisions)");

    let db = crate::fresh_database(args, "policy");
    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 0..rounds {
        for with_policy in [false, true] {
            let rate = submit(dispatch, db.url(), &file, with_policy, runs, round);
            println!(
                "round {}: policy {}: {rate:.0} runs/s",
                round + 1,
                if with_policy { "on " } else { "off" }
            );
            if with_policy { &mut on } else { &mut off }.push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "batch submission, mean of {rounds} rounds: policy off {:.0} runs/s, on {:.0} runs/s ({:.1} % cost)",
        mean(&off),
        mean(&on),
        (1.0 - mean(&on) / mean(&off)) * 100.0
    );
}

/// Runs/s of `runs` runs through the batch endpoint of a fresh server.
fn submit(
    dispatch: &Path,
    db: &str,
    policy: &Path,
    with_policy: bool,
    runs: usize,
    round: usize,
) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(dispatch);
    command
        .args(["server", "--listen", "127.0.0.1:0", "--workers", "0"])
        .args(["--database-url", db])
        .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .env_remove("DISPATCH_POLICY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if with_policy {
        command.env("DISPATCH_POLICY", policy);
    }
    let mut server = command.spawn().expect("the server starts");
    let base = format!("http://{}", host_of(&mut server));
    let upload = json!({"files": {"Agentfile": "FROM process\nNAME noop\nCOMMAND true\n"}});
    let (status, built) = call(&base, "POST", "/v1/parcels", Some(&upload));
    assert!(status < 300, "the parcel uploads: {built}");
    let digest = built["digest"].as_str().expect("a digest").to_string();
    let t = Instant::now();
    for start in (0..runs).step_by(1000) {
        let items: Vec<Value> = (start..(start + 1000).min(runs))
            .map(|i| json!({"parcel": digest, "payload": {"i": i, "round": round, "on": with_policy}}))
            .collect();
        let (status, body) = call(
            &base,
            "POST",
            "/v1/runs/batch",
            Some(&json!({"runs": items})),
        );
        assert_eq!(status, 201, "{body}");
    }
    let rate = runs as f64 / t.elapsed().as_secs_f64();
    let _ = server.kill();
    let _ = server.wait();
    rate
}
