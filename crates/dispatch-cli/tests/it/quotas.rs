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
