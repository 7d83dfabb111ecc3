//! `dispatch quota` in the local state (SQLite): a project's live-run cap
//! holds detached runs queued (each helper waits, saying why) and never
//! lets more run at once; a budget whose hard action is `refuse` refuses a
//! new run naming the quota, its use and its limit, until it is raised.

use crate::common;
use crate::native_common;

use std::time::{Duration, Instant};

use common::Dispatch;
use native_common::{Mock, native_agent, text};
use serde_json::{Value, json};

fn runs(d: &Dispatch) -> Vec<Value> {
    let out = d.ok(&["ps", "-a", "--format", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("ps prints JSON ({e}): {out}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_local_cap_keeps_detached_runs_queued_and_never_lets_more_run() {
    let d = Dispatch::new();
    d.ok(&["quota", "set", "default", "--max-live-runs", "2"]);
    let agent = d.agent("capped", "sleep 0.3\n");
    let agent = agent.to_str().expect("utf-8");
    let ids: Vec<String> = (0..6).map(|_| d.ok(&["run", agent, "--detach"])).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = runs(&d);
        let live = all
            .iter()
            .filter(|r| {
                matches!(
                    r["status"].as_str(),
                    Some("starting" | "running" | "paused")
                )
            })
            .count();
        assert!(live <= 2, "{live} live runs over a cap of 2: {all:#?}");
        if all.iter().all(|r| r["status"] == "succeeded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runs did not finish: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    // A helper that waited said why in the run's log.
    let said = ids.iter().any(|id| {
        d.ok(&["logs", id])
            .contains("waiting: project quota, 2/2 live runs in project `default`")
    });
    assert!(said, "a waiting helper said why");
    // A foreground run waits its turn too, then runs.
    d.ok(&["run", agent]);
}

#[test]
fn a_refusing_budget_refuses_new_runs_with_the_reason_until_raised() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("one", 100, 10), text("two", 100, 10)]));
    let agent = native_agent(
        d.dir.path(),
        "billed",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nPRICE gpt-4o-mini INPUT 1000 OUTPUT 1000",
            mock.url()
        ),
    );
    let agent = agent.to_str().expect("utf-8");
    d.ok(&[
        "quota",
        "set",
        "search",
        "--tokens-per-day",
        "100",
        "--on-hard",
        "refuse",
    ]);
    d.ok(&["run", agent, "--project", "search"]);
    let err = d.fails(&["run", agent, "--project", "search"], 125);
    assert!(
        err.contains(
            "project `search` is over its quota tokens_per_day: 110 tokens today (UTC) used of 100"
        ),
        "{err}"
    );
    assert!(
        err.contains("dispatch quota set search --tokens-per-day N"),
        "{err}"
    );
    // Another project is not concerned.
    d.ok(&["quota", "ls"]);
    let ls: Value =
        serde_json::from_str(&d.ok(&["quota", "ls", "--format", "json"])).expect("JSON");
    assert_eq!(ls[0]["used"], 110.0, "{ls}");
    assert_eq!(ls[0]["period"].as_str().map(str::len), Some(10), "{ls}");
    let bad = d.fails(
        &[
            "quota",
            "set",
            "search",
            "--soft",
            "0%",
            "--max-live-runs",
            "1",
        ],
        125,
    );
    assert!(bad.contains("--soft: `0%` is not a percentage"), "{bad}");
    let bad = d.fails(&["quota", "set", "search"], 125);
    assert!(bad.contains("no limit given"), "{bad}");
    d.ok(&["quota", "set", "search", "--tokens-per-day", "1M"]);
    d.ok(&["run", agent, "--project", "search"]);
}

#[test]
fn a_running_native_agent_over_its_projects_budget_ends_before_its_next_call() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "search", "arguments": {"q": "x"}}],
         "usage": {"input_tokens": 500, "output_tokens": 0}},
        text("never", 10, 2),
    ]));
    let agent = native_agent(
        d.dir.path(),
        "spender",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    d.ok(&["quota", "set", "default", "--tokens-per-day", "300"]);
    let id = d.ok(&["run", agent.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with(
            "budget_exceeded: project `default` is over its quota tokens_per_day: 500/300 tokens today (UTC)"
        ),
        "{reason}"
    );
    assert_eq!(
        mock.requests().len(),
        1,
        "no call after the budget was reached"
    );
    let marks: Vec<String> = native_common::events_of(&doc, "quota")
        .iter()
        .map(|e| e["mark"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        marks,
        vec!["soft", "hard"],
        "both marks crossed by the one call"
    );
}
