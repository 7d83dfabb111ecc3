//! `dispatch-bench policy [--dispatch PATH] [--calls N] [--runs N] [--rounds N] [--same] [--database-url URL]`:
//! what a Rego policy costs (issue #37).
//!
//! 1. Evaluation: `--calls` (20,000) `tool_call` and `create_run` decisions
//!    of the policy in `docs/policy.md`, in this process: p50 / p99 µs,
//!    and the time to load (parse, check, trial) it.
//! 2. Submission side by side: two `dispatch server`s (no workers) on one
//!    fresh PostgreSQL database, one with the policy and one without,
//!    `--runs` (10,000) runs each through `POST /v1/runs/batch` (1,000 a
//!    request), the batches alternating between them, for `--rounds` (3)
//!    rounds of fresh servers. Prints the median batch's runs/s of each and
//!    the median on/off ratio of the pairs. `--same` runs both sides
//!    without the policy: the method's own noise (an A/A test).

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
    // Both sides without the policy: what the method's own noise is.
    let same = args.iter().any(|a| a == "--same");
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
    let (mut on, mut off, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Both servers live at once, batches alternating between them (the
        // order flipped each pair): a pair is measured within a second or
        // two, so the host's swings weigh on both sides alike.
        let policy = (!same).then_some(file.as_path());
        let mut sides = [false, true].map(|p| Side::start(dispatch, db.url(), policy, p));
        let (mut round_on, mut round_off) = (Vec::new(), Vec::new());
        for (pair, start) in (0..runs).step_by(BATCH).enumerate() {
            let n = BATCH.min(runs - start);
            let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut rates = [0.0; 2];
            for i in order {
                rates[i] = sides[i].submit(n, round, pair);
            }
            round_off.push(rates[0]);
            round_on.push(rates[1]);
            ratios.push(rates[1] / rates[0]);
        }
        for side in &mut sides {
            side.stop();
        }
        println!(
            "round {}: policy off {:.0} runs/s, on {:.0} runs/s (median batch)",
            round + 1,
            median(&mut round_off.clone()),
            median(&mut round_on.clone())
        );
        off.extend(round_off);
        on.extend(round_on);
    }
    let pairs = ratios.len();
    println!(
        "batch submission, {pairs} alternating pairs of {BATCH}: policy off {:.0} runs/s, on {:.0} runs/s (medians); median on/off {:.3} ({:.1} % cost)",
        median(&mut off),
        median(&mut on),
        median(&mut ratios.clone()),
        (1.0 - median(&mut ratios)) * 100.0
    );
}

/// Runs a batch request holds.
const BATCH: usize = 1000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 0.5)
}

/// A `dispatch server` (no workers) on the benchmark's database, with the
/// policy or without, and the noop parcel uploaded to it.
struct Side {
    server: std::process::Child,
    base: String,
    digest: String,
    with_policy: bool,
    _dir: tempfile::TempDir,
}

impl Side {
    fn start(dispatch: &Path, db: &str, policy: Option<&Path>, with_policy: bool) -> Side {
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
        if let Some(policy) = policy.filter(|_| with_policy) {
            command.env("DISPATCH_POLICY", policy);
        }
        let mut server = command.spawn().expect("the server starts");
        let base = format!("http://{}", host_of(&mut server));
        let upload = json!({"files": {"Agentfile": "FROM process\nNAME noop\nCOMMAND true\n"}});
        let (status, built) = call(&base, "POST", "/v1/parcels", Some(&upload));
        assert!(status < 300, "the parcel uploads: {built}");
        let digest = built["digest"].as_str().expect("a digest").to_string();
        Side {
            server,
            base,
            digest,
            with_policy,
            _dir: dir,
        }
    }

    /// Runs/s of one batch of `n` runs.
    fn submit(&self, n: usize, round: usize, pair: usize) -> f64 {
        let items: Vec<Value> = (0..n)
            .map(|i| {
                json!({"parcel": self.digest, "payload": {"i": i, "pair": pair, "round": round, "on": self.with_policy}})
            })
            .collect();
        let body = json!({"runs": items});
        let t = Instant::now();
        let (status, answer) = call(&self.base, "POST", "/v1/runs/batch", Some(&body));
        assert_eq!(status, 201, "{answer}");
        n as f64 / t.elapsed().as_secs_f64()
    }

    fn stop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
