//! Detached runs from the binary: record, helper, exit codes, logs, wait,
//! events, usage, artifacts and output.

use crate::common;

use std::path::Path;

use common::{Dispatch, eventually};

fn hello() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello"))
}

#[test]
fn detach_returns_before_the_agent_finishes() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent(
        "slow",
        &format!(
            "while [ ! -e {} ]; do sleep 0.02; done\necho done\n",
            gate.display()
        ),
    );
    let id = d.detach(&agent, "{}");
    assert_eq!(id.len(), 32, "prints the full id: {id}");
    // The agent is blocked on the gate, so the run is live right now.
    eventually(10, "run is running", || d.status(&id) == "running");
    assert!(d.ok(&["ps", "-q"]).contains(&id), "ps lists live runs");
    std::fs::write(&gate, b"").expect("open the gate");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["exit_code"], 0);
}

#[test]
fn the_helper_records_success_and_failure_with_exit_codes() {
    let d = Dispatch::new();
    let ok = d.agent("ok", "exit 0\n");
    let bad = d.agent("bad", "echo failing >&2\nexit 3\n");
    let ok_id = d.detach(&ok, "{}");
    let bad_id = d.detach(&bad, "{}");
    assert_eq!(d.ok(&["wait", &ok_id]), "0");
    let out = d.run(&["wait", &bad_id]);
    assert_eq!(out.status.code(), Some(3), "wait exits with the run's code");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let doc = d.inspect(&bad_id);
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["exit_code"], 3);
    assert_eq!(doc["attempts"][0]["exit_code"], 3);
    let failed = d.ok(&["ps", "-a", "--filter", "status=failed", "-q"]);
    assert_eq!(failed, bad_id, "filter by status");
}

#[test]
fn ps_filters_by_creation_time_and_label() {
    let d = Dispatch::new();
    let agent = d.agent("quick", "exit 0\n");
    let first = d.detach(&agent, "{}");
    d.ok(&["wait", &first]);
    let second = d.detach(&agent, "{}");
    d.ok(&["wait", &second]);
    let doc = d.inspect(&second);
    assert_eq!(doc["labels"], serde_json::json!([]), "inspect shows labels");
    let at = doc["created_at"].as_i64().expect("created_at");
    let since = dispatch_core::time::format_rfc3339(at).expect("a time");
    let ps = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "-q"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        d.ok(&args)
    };
    let both = format!("{second}\n{first}");
    assert_eq!(ps(&["since=1h"]), both, "an age");
    assert_eq!(
        ps(&[&format!("since={since}")]),
        second,
        "since is inclusive"
    );
    assert_eq!(
        ps(&[&format!("until={since}")]),
        first,
        "until is exclusive"
    );
    // The same instant written with an offset.
    let shifted = dispatch_core::time::format_rfc3339(at + 3_600_000)
        .expect("a time")
        .replace('Z', "+01:00");
    assert_eq!(ps(&[&format!("since={shifted}")]), second);
    assert_eq!(ps(&["until=1h"]), "");
    assert_eq!(ps(&["label=gpu"]), "", "these runs have no labels");
    assert_eq!(ps(&["since=1h", "status=succeeded"]), both);
}

#[test]
fn wait_times_out_with_124() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent(
        "waiting",
        &format!("while [ ! -e {} ]; do sleep 0.02; done\n", gate.display()),
    );
    let id = d.detach(&agent, "{}");
    let err = d.fails(&["wait", &id, "--timeout-ms", "200"], 124);
    assert!(err.contains("timed out after 200 ms"), "{err}");
    std::fs::write(&gate, b"").expect("open the gate");
    assert_eq!(d.ok(&["wait", &id[..8]]), "0", "wait accepts a prefix");
}

#[test]
fn logs_reads_the_run_log_and_follow_ends_with_the_run() {
    let d = Dispatch::new();
    let agent = d.agent(
        "talker",
        "for i in 1 2 3 4 5; do echo line $i; sleep 0.05; done\necho to-stderr >&2\n",
    );
    let id = d.detach(&agent, "{}");
    // -f returns by itself once the run ends, having printed everything.
    let followed = d.ok(&["logs", "-f", &id]);
    for i in 1..=5 {
        assert!(followed.contains(&format!("line {i}")), "{followed}");
    }
    assert!(followed.contains("to-stderr"), "stderr is in the log too");
    let all = d.ok(&["logs", &id]);
    assert_eq!(all, followed);
    let tail = d.ok(&["logs", "--tail", "1", &id]);
    assert_eq!(tail.lines().count(), 1);
    assert!(
        tail.contains("succeeded"),
        "the last line is the lifecycle summary: {tail}"
    );
}

#[test]
fn the_hello_example_stores_events_usage_artifacts_and_output() {
    let d = Dispatch::new();
    let id = d.detach(hello(), r#"{"name":"ada"}"#);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["greeting"], "Hello, ada!");
    assert_eq!(doc["usage"]["input_tokens"], 1200);
    assert_eq!(doc["usage"]["output_tokens"], 300);
    assert_eq!(doc["total_tokens"], 1500);
    assert!((doc["usage"]["cost_usd"].as_f64().expect("cost") - 0.0123).abs() < 1e-9);
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    for k in [
        "created",
        "state",
        "step",
        "tool_call",
        "usage",
        "checkpoint",
    ] {
        assert!(kinds.contains(&k), "event {k} in {kinds:?}");
    }
    let tool = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "tool_call")
        .expect("a tool call");
    assert_eq!(tool["data"]["name"], "compose");
    assert_eq!(tool["data"]["ok"], true);
    let art = &doc["artifacts"][0];
    assert_eq!(art["name"], "greeting.txt");
    assert_eq!(art["size"], "Hello, ada!\n".len());
    let stored = d
        .root()
        .join("artifacts")
        .join(art["sha256"].as_str().expect("sha"));
    assert_eq!(
        std::fs::read_to_string(stored).expect("artifact stored"),
        "Hello, ada!\n"
    );
    let log = d.ok(&["logs", &id]);
    assert!(log.contains("Hello, ada!"), "{log}");
}

#[test]
fn malformed_event_lines_become_warnings() {
    let d = Dispatch::new();
    let agent = d.agent(
        "noisy",
        r#"echo 'not json' >> "$DISPATCH_EVENTS"
echo '{"type":"usage","input_tokens":7}' >> "$DISPATCH_EVENTS"
printf '{"type":"teleport"}' >> "$DISPATCH_EVENTS"
"#,
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded");
    let warnings = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "warning")
        .count();
    assert_eq!(warnings, 2, "{doc:#}");
    assert_eq!(doc["usage"]["input_tokens"], 7);
}

#[test]
fn foreground_run_streams_output_and_exits_with_the_runs_code() {
    let d = Dispatch::new();
    let out = d.run(&[
        "run",
        hello().to_str().expect("path"),
        "--job",
        r#"{"name":"ada"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Hello, ada!"), "{stdout}");
    assert!(stderr.contains("succeeded"), "summary on stderr: {stderr}");
    assert!(stderr.contains("tokens 1500"), "{stderr}");
    assert!(stderr.contains("cost $0.0123"), "{stderr}");
    let bad = d.agent("bad", "exit 7\n");
    let out = d.run(&["run", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn fifty_concurrent_detached_runs_are_all_recorded() {
    let d = Dispatch::new();
    let agent = d.agent(
        "counter",
        r#"echo '{"type":"usage","input_tokens":1,"output_tokens":2}' >> "$DISPATCH_EVENTS"
"#,
    );
    // Build once so the 50 launches race on the database, not the parcel.
    d.ok(&["build", agent.to_str().expect("path")]);
    let children: Vec<_> = (0..50)
        .map(|i| {
            d.command()
                .args(["run", agent.to_str().expect("path"), "--detach", "--job"])
                .arg(format!("{{\"i\":{i}}}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn dispatch")
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("wait dispatch");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let mut args = vec!["wait", "--timeout-ms", "60000"];
    args.extend(ids.iter().map(String::as_str));
    d.ok(&args);
    let all: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("json");
    let runs = all.as_array().expect("array");
    assert_eq!(runs.len(), 50);
    for r in runs {
        assert_eq!(r["status"], "succeeded", "{r:#}");
        assert_eq!(r["total_tokens"], 3, "no lost usage update: {r:#}");
    }
    let mut payloads: Vec<i64> = runs
        .iter()
        .map(|r| r["payload"]["i"].as_i64().expect("payload"))
        .collect();
    payloads.sort();
    assert_eq!(payloads, (0..50).collect::<Vec<_>>());
}
