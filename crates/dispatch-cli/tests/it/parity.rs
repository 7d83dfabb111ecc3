//! One product, local or remote: the same CLI scenarios run against the local
//! state and against a `dispatch server` (`--host`), and their outputs and
//! exit codes are diffed. Only what cannot be the same is normalised away:
//! run ids, times and durations, where an attempt ran (a local helper's
//! pid or a worker's name) and the paths of the machine that ran it — each
//! replaced by a placeholder. `inspect-run --format json` is compared whole.

use crate::common;
use crate::remote_common;

use std::process::Output;

use common::eventually;
use regex::Regex;
use remote_common::{Client, Server};

/// Runs `dispatch` locally (no `--host`) or against the server.
trait Side {
    fn out(&self, args: &[&str]) -> Output;
}

impl Side for common::Dispatch {
    fn out(&self, args: &[&str]) -> Output {
        self.run(args)
    }
}

impl Side for Client {
    fn out(&self, args: &[&str]) -> Output {
        self.run(args)
    }
}

fn normalise(text: &str) -> String {
    let rules = [
        // Space reclaimed: each side's files differ in size.
        (r#""reclaimed_bytes":\s*\d+"#, "\"reclaimed_bytes\": <N>"),
        (r"reclaimed \d+(\.\d+)?[kMGT]?B", "reclaimed <BYTES>"),
        (r"[0-9a-f]{32}", "<ID>"),
        (r"\b[0-9a-f]{12}\b", "<SHORT-ID>"),
        (r#"("\w+_at"|"duration_ms"): \d+"#, "$1: <N>"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<TIME>"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<TIME>"),
        (r"\d+ (second|minute)s? ago", "<AGO>"),
        (r"\b\d+(\.\d+)?(ms|s)\b", "<DUR>"),
        (r"on local helper \d+|on [\w.-]+-\d+", "on <WHERE>"),
        (r#""helper":\d+,"#, ""),
        (r#""fence":\d+,"#, ""),
        (r#","worker":"[^"]*""#, ""),
        (r"(?m)^Log: .*$", "Log: <LOG>"),
        (r"(?m)^Brief: .*$", "Brief: <BRIEF>"),
        // A run's workspace is on the machine that ran it: its state is
        // compared, not its path.
        (r"(?m)^Workspace:\s+\S+ ", "Workspace:  <PATH> "),
        // Table columns are as wide as what was replaced above.
        (r" {2,}", "  "),
    ];
    let mut text = text.to_string();
    for (pattern, with) in rules {
        text = Regex::new(pattern)
            .expect("a pattern")
            .replace_all(&text, with)
            .into_owned();
    }
    text
}

/// `inspect-run --format json`: the whole report, with only what cannot be
/// the same made so — where it ran (a local helper's pid and claim, or a
/// worker's name and fencing token), when, and the paths of this machine
/// (the log is a file locally and the server's URL remotely; the run's
/// directory and workspace are on the machine that ran it).
fn normalise_reports(text: &str) -> String {
    let Ok(mut docs) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    fn times(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if (k == "at" || k.ends_with("_at")) && v.is_number() {
                        *v = serde_json::json!("<N>");
                    } else {
                        times(v);
                    }
                }
            }
            serde_json::Value::Array(list) => list.iter_mut().for_each(times),
            _ => {}
        }
    }
    for doc in docs.as_array_mut().into_iter().flatten() {
        times(doc);
        doc["log_path"] = serde_json::json!("<LOG>");
        doc["run_dir"] = serde_json::json!("<RUN_DIR>");
        doc["workspace"]["path"] = serde_json::json!("<WORKSPACE>");
        for a in doc["attempts"].as_array_mut().into_iter().flatten() {
            a["worker"] = serde_json::json!("<WHERE>");
        }
        for e in doc["events"].as_array_mut().into_iter().flatten() {
            if let Some(data) = e["data"].as_object_mut() {
                for k in ["helper", "fence", "worker"] {
                    data.remove(k);
                }
            }
        }
    }
    serde_json::to_string_pretty(&docs).expect("JSON") + "\n"
}

/// What one command printed and how it exited, normalised.
fn seen(side: &dyn Side, args: &[&str]) -> String {
    let out = side.out(args);
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if args[0] == "inspect-run" && args.contains(&"json") {
        stdout = normalise_reports(&stdout);
    }
    format!(
        "$ dispatch {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
        normalise(&args.join(" ")),
        out.status.code(),
        normalise(&stdout),
        normalise(&String::from_utf8_lossy(&out.stderr))
    )
}

fn id_of(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const TELEMETRY: &str = "echo 'hello from the agent'\n\
    echo '{\"type\":\"usage\",\"model\":\"m1\",\"input_tokens\":10,\"output_tokens\":5,\"cost_usd\":0.01}' >> \"$DISPATCH_EVENTS\"\n\
    echo '{\"type\":\"step\",\"name\":\"work\"}' >> \"$DISPATCH_EVENTS\"\n\
    echo '{\"type\":\"tool_call\",\"name\":\"search\",\"input\":{\"q\":1},\"output\":\"x\",\"ok\":true,\"duration_ms\":3}' >> \"$DISPATCH_EVENTS\"\n\
    echo '{\"result\": 42}' > \"$DISPATCH_OUTPUT\"\n";

const FAILING: &str = "echo 'about to fail'\n\
    echo '{\"type\":\"error\",\"message\":\"the upstream said no\",\"retryable\":false}' >> \"$DISPATCH_EVENTS\"\n\
    exit 3\n";

const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"ship\",\"summary\":\"Ship it?\"}' >> \"$DISPATCH_EVENTS\"\n\
    while [ ! -e \"$DISPATCH_APPROVALS/ship.json\" ]; do sleep 0.02; done\n\
    cat \"$DISPATCH_APPROVALS/ship.json\" | grep -q approve\n";

const WAITING: &str = "if [ -z \"$DISPATCH_RESUME\" ]; then\n\
      echo '{\"type\":\"wait\",\"for\":\"signal\",\"name\":\"go\"}' >> \"$DISPATCH_EVENTS\"\n\
      exit 0\n\
    fi\n\
    cp \"$DISPATCH_RESUME\" \"$DISPATCH_OUTPUT\"\n";

/// The whole scenario on one side; returns the transcript.
fn scenario(side: &dyn Side, agent: &dyn Fn(&str, &str) -> String) -> String {
    let mut t = Vec::new();
    // A run with usage, a step, a tool call and an output.
    let ok = agent("telemetry", TELEMETRY);
    let id = id_of(side.out(&["run", &ok, "--detach"]));
    t.push(seen(side, &["wait", &id]));
    t.push(seen(side, &["inspect-run", &id]));
    t.push(seen(side, &["inspect-run", &id, "--format", "json"]));
    t.push(seen(side, &["logs", &id]));
    t.push(seen(side, &["logs", &id, "--attempt", "1"]));
    // A failing one: its exit code, reason and dead letter.
    let bad = agent("failing", FAILING);
    let failed = id_of(side.out(&["run", &bad, "--detach"]));
    t.push(seen(side, &["wait", &failed]));
    t.push(seen(side, &["inspect-run", &failed]));
    t.push(seen(side, &["inspect-run", &failed, "--format", "json"]));
    t.push(seen(side, &["dlq", "ls"]));
    t.push(seen(side, &["ps", "-a"]));
    t.push(seen(side, &["ps", "-a", "--format", "json"]));
    // Approvals.
    let asking = agent("asking", ASKING);
    let asked = id_of(side.out(&["run", &asking, "--detach"]));
    eventually(20, "the run asks", || {
        String::from_utf8_lossy(&side.out(&["approvals", "ls"]).stdout).contains("ship")
    });
    t.push(seen(side, &["approvals", "ls"]));
    t.push(seen(side, &["approve", &asked, "ship", "--by", "ada"]));
    t.push(seen(side, &["wait", &asked]));
    t.push(seen(side, &["inspect-run", &asked, "--format", "json"]));
    t.push(seen(side, &["approvals", "ls", "-a"]));
    // A durable wait and its signal.
    let waiting = agent("waiting", WAITING);
    let waited = id_of(side.out(&["run", &waiting, "--detach"]));
    eventually(20, "the run is suspended", || {
        String::from_utf8_lossy(&side.out(&["ps"]).stdout).contains("(suspended)")
    });
    t.push(seen(side, &["ps"]));
    t.push(seen(side, &["signal", &waited, "go", "--value", "7"]));
    t.push(seen(side, &["wait", &waited]));
    // Create and start, replay, restart and rm.
    let created = id_of(side.out(&["create", &ok]));
    t.push(seen(side, &["ps", "-a", "--filter", "status=created"]));
    t.push(seen(side, &["start", &created]));
    t.push(seen(side, &["wait", &created]));
    t.push(seen(side, &["start", &created]));
    t.push(seen(side, &["replay", &created]));
    let replayed = id_of(side.out(&["replay", &created, "--allow-side-effects"]));
    t.push(seen(side, &["wait", &replayed]));
    t.push(seen(side, &["inspect-run", &replayed]));
    t.push(seen(side, &["inspect-run", &replayed, "--format", "json"]));
    let restarted = id_of(side.out(&["restart", &replayed]));
    t.push(seen(side, &["wait", &restarted]));
    t.push(seen(side, &["rm", &created]));
    t.push(seen(side, &["rm", &created]));
    // Mistakes: the same message and exit code.
    t.push(seen(side, &["inspect-run", "ffffffffffff"]));
    t.push(seen(side, &["stop", &id]));
    t.push(seen(side, &["signal", &id, "go"]));
    t.push(seen(side, &["logs", "ffffffffffff"]));
    t.push(seen(side, &["approve", &id, "nope"]));
    // Prune: the same refusal without a terminal, the same mistakes, the
    // same removals; the failed run is kept for its dead letter until asked.
    t.push(seen(side, &["prune"]));
    t.push(seen(side, &["prune", "--filter", "status=running"]));
    t.push(seen(side, &["prune", "--filter", "colour=red"]));
    t.push(seen(side, &["prune", "-f", "--filter", "status=succeeded"]));
    t.push(seen(side, &["ps", "-a", "-q"]));
    t.push(seen(
        side,
        &["prune", "-f", "--dead-letters", "--format", "json"],
    ));
    t.push(seen(side, &["ps", "-a", "-q"]));
    t.join("\n")
}

#[test]
fn the_same_scenarios_give_the_same_output_locally_and_on_a_server() {
    let local = common::Dispatch::new();
    let local_dir = local.dir.path().to_path_buf();
    let local_agent = |name: &str, script: &str| {
        let dir = common::checks::agent(&local_dir, name, "", script, "");
        dir.to_string_lossy().to_string()
    };
    let here = scenario(&local, &local_agent);

    let server = Server::start(&[]);
    let client = Client::new(&server);
    let remote_agent = |name: &str, script: &str| client.agent(name, script);
    let there = scenario(&client, &remote_agent);

    if here != there {
        let (a, b): (Vec<&str>, Vec<&str>) = (here.lines().collect(), there.lines().collect());
        let mut diff = String::new();
        for i in 0..a.len().max(b.len()) {
            let (l, r) = (
                a.get(i).copied().unwrap_or(""),
                b.get(i).copied().unwrap_or(""),
            );
            if l != r {
                diff.push_str(&format!("line {i}:\n  local:  {l}\n  remote: {r}\n"));
            }
        }
        panic!("local and remote differ:\n{diff}\n--- local\n{here}\n--- remote\n{there}");
    }
}
