//! An eval's own run: the parent of its cases' runs. `dispatch stop` of it
//! stops the eval and its live cases; `restart` and `replay` refuse it; an
//! eval process killed with SIGKILL leaves it `failed`, not stuck.

use crate::common;

use std::process::Stdio;

use common::{Dispatch, eventually};
use serde_json::Value;

/// A process agent that sleeps as long as its payload says.
const SLEEPER: &str = r#"payload=$(cat "$DISPATCH_PAYLOAD")
case "$payload" in *long*) sleep 60 ;; esac
echo '{"done":true}' > "$DISPATCH_OUTPUT"
"#;

const CASES: &str = r#"
[[case]]
name = "long one"
payload = { t = "long" }
expect.status = "succeeded"

[[case]]
name = "long two"
payload = { t = "long" }

[[case]]
name = "quick"
payload = { t = "short" }
expect.status = "succeeded"

[[case]]
name = "never started"
payload = { t = "short" }
"#;

fn setup(d: &Dispatch) -> (String, String) {
    let agent = d.agent("sleepy", SLEEPER);
    let cases = d.dir.path().join("cases.toml");
    std::fs::write(&cases, CASES).expect("write cases");
    (
        agent.to_str().expect("utf-8").to_string(),
        cases.to_str().expect("utf-8").to_string(),
    )
}

/// The id of the one eval run, once it exists.
fn eval_run(d: &Dispatch) -> String {
    let mut id = String::new();
    eventually(30, "the eval's run exists", || {
        id = d.ok(&["ps", "-a", "-q", "--no-trunc", "--filter", "label=eval-run"]);
        !id.trim().is_empty()
    });
    id.trim().to_string()
}

fn live_children(d: &Dispatch, id: &str) -> usize {
    d.ok(&["ps", "-q", "--parent", id]).lines().count()
}

#[test]
fn stopping_the_eval_run_stops_its_live_cases_and_reports_the_rest_not_run() {
    let d = Dispatch::new();
    let (agent, cases) = setup(&d);
    let eval = d
        .command()
        .args([
            "eval", &agent, "--cases", &cases, "-j", "2", "--format", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eval");
    let id = eval_run(&d);
    eventually(30, "two long cases running", || live_children(&d, &id) == 2);
    assert_eq!(d.status(&id), "running");
    d.ok(&["stop", &id]);
    let out = eval.wait_with_output().expect("eval ends");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("eval stopping: the eval's run was stopped"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["eval"], id.as_str());
    assert!(report["stopped"].as_str().is_some(), "{report}");
    let by_case = |name: &str| {
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|o| o["case"] == name)
            .cloned()
            .expect("case")
    };
    assert_eq!(by_case("quick")["status"], "not_run");
    assert_eq!(by_case("long one")["status"], "cancelled");
    assert_eq!(by_case("long two")["status"], "cancelled");
    assert_eq!(by_case("never started")["status"], "not_run");
    // Nothing of the eval is left running, and its run says why it ended.
    assert_eq!(live_children(&d, &id), 0);
    let group = d.inspect(&id);
    assert_eq!(group["status"], "cancelled", "{group}");
    let children = d.ok(&["ps", "-a", "-q", "--parent", &id]);
    assert_eq!(children.lines().count(), 2, "{children}");
    // It runs no program of its own: nothing to restart or replay.
    let err = d.fails(&["restart", &id], 125);
    assert!(err.contains("is an eval's run"), "{err}");
    let err = d.fails(&["replay", &id, "--allow-side-effects"], 125);
    assert!(err.contains("is an eval's run"), "{err}");
}

#[test]
fn an_eval_killed_with_sigkill_leaves_its_run_failed_not_stuck() {
    let d = Dispatch::new();
    let (agent, cases) = setup(&d);
    let mut eval = d
        .command()
        .args(["eval", &agent, "--cases", &cases, "-j", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eval");
    let id = eval_run(&d);
    eventually(30, "two long cases running", || live_children(&d, &id) == 2);
    eval.kill().expect("SIGKILL the eval");
    eval.wait().expect("reaped");
    // The next reader finds the holder gone and ends the eval's run.
    let group = d.inspect(&id);
    assert_eq!(group["status"], "failed", "{group}");
    // The cases are runs of their own and go on; stop them.
    for c in d.ok(&["ps", "-q", "--parent", &id]).lines() {
        d.ok(&["stop", c, "-t", "0"]);
    }
    assert_eq!(live_children(&d, &id), 0);
}
