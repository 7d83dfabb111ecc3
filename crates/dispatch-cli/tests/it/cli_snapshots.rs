//! Snapshots (insta) of what a person reads: `--help` of the top level and
//! of `run`, `ps`, `logs`, `inspect-run`, and the one-line errors of bad
//! input with their exit codes. The snapshots are in `snapshots/` beside
//! this file; a change to the output shows as a diff to review
//! (`cargo insta review`, or accept the written `.snap.new` files). Under
//! `CI=true` insta writes nothing and a mismatch (or a missing snapshot)
//! fails the test.
//!
//! What changes from run to run is filtered before the comparison: run ids,
//! digests, times, durations, the temporary directory, helper pids, and the
//! host's sandbox protections.

use crate::common;

use std::process::Output;

use common::Dispatch;

/// `dispatch <args>` in `d`, with no `DISPATCH_*` or `LLM_*` variable of
/// the test's own environment (clap prints a set one in `--help`).
fn run(d: &Dispatch, args: &[&str]) -> Output {
    let mut c = d.command();
    for (k, _) in std::env::vars() {
        if (k.starts_with("DISPATCH_") && k != "DISPATCH_ROOT" && k != "DISPATCH_SANDBOX")
            || k.starts_with("LLM_")
        {
            c.env_remove(k);
        }
    }
    c.env("COLUMNS", "100")
        .args(args)
        .output()
        .expect("dispatch runs")
}

/// `d`'s temporary directory filtered out (help shows `DISPATCH_ROOT`).
fn dir_settings(d: &Dispatch) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let dir = d.dir.path().display().to_string();
    s.add_filter(&regex::escape(&dir), "[DIR]");
    s
}

/// The filters for `d`'s outputs of runs.
fn settings(d: &Dispatch) -> insta::Settings {
    let mut s = dir_settings(d);
    s.add_filter(r"\b[0-9a-f]{64}\b", "[SHA256]");
    s.add_filter(r"\b[0-9a-f]{32}\b", "[RUN_ID]");
    s.add_filter(r"\b[0-9a-f]{12}\b", "[ID]");
    s.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[TIME]");
    s.add_filter(r"\b\d+ (second|minute)s? ago", "[AGO]");
    s.add_filter(r"\b\d+(\.\d+)?(ms|s)\b", "[DURATION]");
    s.add_filter(r"helper \d+", "helper [PID]");
    s.add_filter(r#""helper":\d+"#, r#""helper":[PID]"#);
    // What the sandbox could add depends on the host's kernel.
    s.add_filter(
        r#"\(DISPATCH_SANDBOX=off\); [^"\n]*"#,
        "(DISPATCH_SANDBOX=off); [PROTECTIONS]",
    );
    s.add_filter(
        r#""protections":\[[^\]]*\]"#,
        r#""protections":[PROTECTIONS]"#,
    );
    s
}

/// Stdout, then stderr, then the exit code: one text to compare.
fn shown(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().map_or("signal".into(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hello(d: &Dispatch) -> String {
    let dir = d.agent(
        "hello",
        "echo \"hello $(cat \"$DISPATCH_PAYLOAD\")\"\necho line two\n",
    );
    dir.to_str().expect("utf-8").to_string()
}

#[test]
fn help_of_the_top_level_and_of_run() {
    let d = Dispatch::new();
    dir_settings(&d).bind(|| {
        insta::assert_snapshot!("help", shown(&run(&d, &["--help"])));
        insta::assert_snapshot!("run_help", shown(&run(&d, &["run", "--help"])));
    });
}

#[test]
fn a_finished_run_in_ps_logs_and_inspect_run() {
    let d = Dispatch::new();
    let agent = hello(&d);
    let out = run(&d, &["run", &agent, "--job", r#"{"name":"ada"}"#]);
    assert!(out.status.success(), "{}", shown(&out));
    let id = d.ok(&["ps", "-a", "-q"]);
    settings(&d).bind(|| {
        insta::assert_snapshot!("run", shown(&out));
        // Column widths follow the widest value (an age, a duration):
        // runs of spaces are one gap here.
        let ps = shown(&run(&d, &["ps", "-a"]));
        let gaps = regex::Regex::new(" {2,}").expect("a regex");
        insta::assert_snapshot!("ps_all", gaps.replace_all(&ps, "  "));
        insta::assert_snapshot!("ps_live_none", shown(&run(&d, &["ps"])));
        insta::assert_snapshot!("logs", shown(&run(&d, &["logs", &id])));
        insta::assert_snapshot!("inspect_run", shown(&run(&d, &["inspect-run", &id])));
    });
}

#[test]
fn bad_input_gets_one_line_and_its_exit_code() {
    let d = Dispatch::new();
    let agent = hello(&d);
    let bad = d.dir.path().join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(
        bad.join("Agentfile"),
        "FROM process\nNAME bad\nCOMAND sh x\n",
    )
    .expect("write");
    let missing = d.dir.path().join("nonexistent");
    let cases: [(&str, Vec<&str>); 6] = [
        ("unknown_run", vec!["inspect-run", "ffff"]),
        (
            "missing_agent_dir",
            vec!["run", missing.to_str().expect("utf-8")],
        ),
        ("payload_not_json", vec!["run", &agent, "--job", "{bad"]),
        (
            "unknown_directive",
            vec!["build", bad.to_str().expect("utf-8")],
        ),
        ("unknown_filter", vec!["ps", "--filter", "bogus=1"]),
        ("missing_argument", vec!["logs"]),
    ];
    settings(&d).bind(|| {
        for (name, args) in &cases {
            insta::assert_snapshot!(*name, shown(&run(&d, args)));
        }
    });
}
