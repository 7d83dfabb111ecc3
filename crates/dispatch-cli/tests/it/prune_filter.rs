//! `dispatch prune`: filters, confirmation, kept dead letters, files removed.

use crate::common;
use crate::native_common::terminal;

use common::Dispatch;
use serde_json::Value;

/// Runs an agent to its end; returns its id.
fn finished(d: &Dispatch, agent: &std::path::Path, job: &str) -> String {
    let id = d.detach(agent, job);
    d.wait_terminal(&id);
    id
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
fn prune_filters_by_status_parcel_and_end_time() {
    let d = Dispatch::new();
    let good = d.agent("good", "exit 0\n");
    let bad = d.agent("bad", "exit 3\n");
    let ok1 = finished(&d, &good, "{}");
    let failed = finished(&d, &bad, "{}");

    // Ended more than a day ago: none.
    assert_eq!(d.ok(&["prune", "-f", "--filter", "until=24h"]), "");
    assert_eq!(
        d.ok(&["prune", "-f", "--filter", "status=failed", "--dead-letters"]),
        failed,
        "only the failed run (dead-lettered, as every failed job)"
    );
    let ok2 = finished(&d, &good, "{}");
    let failed2 = finished(&d, &bad, "{}");
    let mut got = lines(&d.ok(&["prune", "-f", "--filter", "parcel=good"]))
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    got.sort();
    let mut want = vec![ok1, ok2];
    want.sort();
    assert_eq!(got, want, "only the runs of parcel good");
    // An RFC 3339 time in the future: every finished run ended before it.
    let out = d.ok(&[
        "prune",
        "-f",
        "--filter",
        "until=2999-01-01T00:00:00Z",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["removed"].as_array().expect("ids").len(), 0, "{v}");
    let out = d.run(&["prune", "-f"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kept 1 run with a dead letter"), "{stderr}");
    let out = d.ok(&["prune", "-f", "--dead-letters", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["removed"][0], failed2.as_str(), "{v}");
    assert!(v["reclaimed_bytes"].as_u64().expect("bytes") > 0, "{v}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn bad_filters_are_one_line_errors_with_exit_125() {
    let d = Dispatch::new();
    for (filter, says) in [
        ("colour=red", "unknown --filter key `colour`"),
        ("status=running", "finished runs only"),
        ("status=bogus", "unknown status `bogus`"),
        ("until=yesterday", "is not a time"),
        ("parcel", "is not KEY=VALUE"),
    ] {
        let e = d.fails(&["prune", "-f", "--filter", filter], 125);
        assert!(e.contains(says), "{filter}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{filter}: one line: {e}");
    }
}

#[test]
fn prune_without_force_refuses_when_stdin_is_not_a_terminal() {
    let d = Dispatch::new();
    let good = d.agent("good", "exit 0\n");
    let id = finished(&d, &good, "{}");
    let e = d.fails(&["prune"], 125);
    assert!(e.contains("pass -f"), "{e}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), id, "nothing removed");
    // Nothing to remove: nothing to ask either.
    assert_eq!(d.ok(&["prune", "--filter", "status=failed"]), "");
}

#[test]
fn dead_lettered_runs_are_kept_unless_asked() {
    let d = Dispatch::new();
    let doomed = d.agent("doomed", "exit 4\n");
    let id = d.ok(&[
        "run",
        doomed.to_str().expect("utf-8"),
        "--detach",
        "--job",
        "{}",
        "--retries",
        "0",
    ]);
    d.wait_terminal(&id);
    assert!(d.ok(&["dlq", "ls", "--format", "json"]).contains(&id));
    assert_eq!(d.ok(&["prune", "-f"]), "", "the dead-lettered run stays");
    assert_eq!(d.ok(&["prune", "-f", "--dead-letters"]), id);
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn prune_removes_run_files_and_artifacts_no_other_run_needs() {
    let d = Dispatch::new();
    let maker = d.agent(
        "maker",
        "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_ARTIFACTS/out.txt\"\necho 'same' > \"$DISPATCH_ARTIFACTS/shared.txt\"\n",
    );
    let first = finished(&d, &maker, r#"{"n":1}"#);
    let second = finished(&d, &maker, r#"{"n":2}"#);
    let root = d.root();
    let count = |dir: &str| std::fs::read_dir(root.join(dir)).map_or(0, |e| e.flatten().count());
    // out.txt differs per run; shared.txt is one file for both.
    assert_eq!(count("artifacts"), 3);
    assert!(
        root.join("runs").join(&first).exists()
            || root.join("runs").join(format!("{first}.log")).exists()
    );

    // Prune the first run only: its own artifact goes, the shared one stays.
    let until = d.inspect(&second)["created_at"]
        .as_i64()
        .expect("created_at");
    let until = chrono_like(until);
    assert_eq!(
        d.ok(&["prune", "-f", "--filter", &format!("until={until}")]),
        first
    );
    assert_eq!(
        count("artifacts"),
        2,
        "the shared artifact stays for the second run"
    );
    assert!(!root.join("runs").join(&first).exists());
    assert!(!root.join("runs").join(format!("{first}.log")).exists());
    let out = d.run(&["prune", "-f"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("removed 1 run, reclaimed"), "{stderr}");
    assert_eq!(count("artifacts"), 0);
    assert_eq!(count("briefs"), 0);
}

/// `ms` since the epoch as RFC 3339 (UTC), via `date` to keep the test's
/// dependencies as they are.
fn chrono_like(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}.{:03}", ms / 1000, ms % 1000),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn on_a_terminal_prune_asks_first_and_no_keeps_everything() {
    let d = Dispatch::new();
    let good = d.agent("good", "exit 0\n");
    let id = finished(&d, &good, "{}");
    let mut cmd = d.command();
    cmd.arg("prune");
    let mut t = terminal::Terminal::open(cmd);
    t.wait_for("Are you sure you want to continue? [y/N]");
    assert!(
        t.screen()
            .contains("WARNING! This will remove 1 finished run")
    );
    t.type_in("n\n");
    assert!(t.child.wait().expect("exit").success());
    assert_eq!(d.ok(&["ps", "-a", "-q"]), id, "nothing removed");

    let mut cmd = d.command();
    cmd.arg("prune");
    let mut t = terminal::Terminal::open(cmd);
    t.wait_for("[y/N]");
    t.type_in("y\n");
    assert!(t.child.wait().expect("exit").success());
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}
