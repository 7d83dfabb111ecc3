//! Quotas per project across a cluster: `dispatch server --workers 0` on
//! PostgreSQL and two `dispatch worker`s. A project's live-run cap is never
//! exceeded however many runs are submitted at once (polled while they run,
//! and checked from their attempts' start and end times); its token budget
//! is hit soft, then hard, under load: later runs wait queued, saying why,
//! until `dispatch quota set` raises it.

use crate::common;
use crate::native_common;
use crate::remote_common;

use std::time::{Duration, Instant};

use native_common::{Mock, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

fn runs_of(client: &Client, project: &str) -> Vec<Value> {
    let out = client.ok(&["ps", "-a", "--project", project, "--format", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("ps prints JSON ({e}): {out}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn live(runs: &[Value]) -> usize {
    runs.iter()
        .filter(|r| {
            matches!(
                r["status"].as_str(),
                Some("starting" | "running" | "paused")
            )
        })
        .count()
}

#[test]
fn two_workers_never_run_more_of_a_project_than_its_cap() {
    const CAP: usize = 3;
    const RUNS: usize = 14;
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    client.ok(&["quota", "set", "team", "--max-live-runs", "3"]);
    let dir = client.agent("capped", "sleep 1\n");
    let _a = Worker::start(db.url(), "wa", &["--slots", "4"]);
    let _b = Worker::start(db.url(), "wb", &["--slots", "4"]);
    // Another project's runs are not held back by the cap (this one also
    // uploads the parcel: the runs below name it).
    let other = client.ok(&["run", &dir, "--detach", "--project", "other"]);
    // Submitted at once, from several clients.
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RUNS)
            .map(|_| s.spawn(|| client.ok(&["run", "capped", "--detach", "--project", "team"])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a submitter"))
            .collect()
    });
    let mut max_live = 0;
    let mut said_why = None;
    let mut reasons = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = runs_of(&client, "team");
        let now = live(&runs);
        max_live = max_live.max(now);
        assert!(
            now <= CAP,
            "{now} live runs of the project over its cap of {CAP}"
        );
        for r in &runs {
            reasons.insert(format!("{} {}", r["status"], r["waiting"]));
        }
        if said_why.is_none() {
            said_why = runs
                .iter()
                .find_map(|r| {
                    r["waiting"]
                        .as_str()
                        .filter(|w| w.starts_with("project quota"))
                })
                .map(str::to_string);
        }
        if runs.iter().all(|r| r["status"] == "succeeded") && runs.len() == RUNS {
            break;
        }
        assert!(
            runs.iter().all(|r| r["status"] != "failed"),
            "a run failed: {runs:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "the runs did not finish: {runs:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.ok(&["wait", &other]), "0");
    // From the attempts: never more than CAP at once.
    let mut edges: Vec<(i64, i32)> = Vec::new();
    let mut workers = std::collections::HashSet::new();
    for id in &ids {
        let doc = client.inspect(id);
        let a = &doc["attempts"][0];
        workers.insert(a["worker"].as_str().unwrap_or("?").to_string());
        edges.push((a["started_at"].as_i64().expect("started"), 1));
        edges.push((a["ended_at"].as_i64().expect("ended"), -1));
    }
    // An end before a start at the same instant: a slot freed, then taken.
    edges.sort();
    let (mut at_once, mut most) = (0, 0);
    for (_, d) in edges {
        at_once += d;
        most = most.max(at_once);
    }
    assert!(
        most as usize <= CAP,
        "{most} attempts at once over a cap of {CAP}"
    );
    assert_eq!(workers.len(), 2, "both workers took runs: {workers:?}");
    eprintln!("max live runs seen by polling: {max_live}; by attempts: {most}");
    let why = said_why.unwrap_or_else(|| {
        panic!("no queued run said it waits for the project quota: {reasons:?}")
    });
    assert_eq!(why, "project quota, 3/3 live runs");
    // The listing says what is used.
    let ls: Value =
        serde_json::from_str(&client.ok(&["quota", "ls", "--format", "json"])).expect("JSON");
    assert_eq!(ls[0]["project"], "team");
    assert_eq!(ls[0]["limit"], "max_live_runs");
    assert_eq!(ls[0]["value"], 3.0);
    assert_eq!(ls[0]["used"], 0.0);
}

#[test]
fn a_token_budget_is_hit_soft_then_hard_under_load_and_a_raise_lets_the_rest_go() {
    let Some(db) = postgres() else { return };
    // Each run makes one call of 100 + 10 tokens.
    let steps: Vec<Value> = (0..12).map(|_| text("done", 100, 10)).collect();
    let mock = Mock::start(json!(steps));
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    // 400 tokens a day, soft at 50 %: the second run crosses the soft mark,
    // the fourth the hard limit; the runs after it wait.
    client.ok(&[
        "quota",
        "set",
        "team",
        "--tokens-per-day",
        "400",
        "--soft",
        "50%",
    ]);
    let dir = client.dir.path().join("billed");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME billed\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             PRICE gpt-4o-mini INPUT 1000 OUTPUT 1000\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let dir = dir.to_str().expect("utf-8");
    let _a = Worker::start(db.url(), "wa", &["--slots", "1"]);
    let _b = Worker::start(db.url(), "wb", &["--slots", "1"]);
    let ids: Vec<String> = (0..8)
        .map(|_| client.ok(&["run", dir, "--detach", "--project", "team"]))
        .collect();
    // Two workers, one slot each: at most one call each in flight when the
    // limit is reached. A run claimed before it that had not called yet
    // ends `budget_exceeded`; the rest wait queued.
    let stopped = |r: &Value| {
        r["status"] == "failed"
            && r["state"]["reason"].as_str().is_some_and(|why| {
                why.starts_with("budget_exceeded: project `team` is over its quota tokens_per_day")
            })
    };
    common::eventually(90, "the budget is reached and the rest wait", || {
        let runs = runs_of(&client, "team");
        let done = runs.iter().filter(|r| r["status"] == "succeeded").count();
        let ended = runs.iter().filter(|r| stopped(r)).count();
        let waiting = runs
            .iter()
            .filter(|r| {
                r["waiting"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("project quota, tokens_per_day"))
            })
            .count();
        done >= 4 && done + ended + waiting == runs.len()
    });
    let runs = runs_of(&client, "team");
    let done = runs.iter().filter(|r| r["status"] == "succeeded").count();
    let ended = runs.iter().filter(|r| stopped(r)).count();
    assert!(
        (4..=5).contains(&done) && ended <= 2,
        "the budget stops new calls, overshooting by at most the one call in flight on the other worker: {done} done, {ended} stopped"
    );
    let used: Value =
        serde_json::from_str(&client.ok(&["quota", "ls", "--format", "json"])).expect("JSON");
    let used = used[0]["used"].as_f64().expect("used");
    assert!(
        (440.0..=550.0).contains(&used),
        "4 calls of 110 tokens reach 400; at most one more was in flight: {used}"
    );
    let why = runs
        .iter()
        .find_map(|r| r["waiting"].as_str())
        .expect("a waiting run says why");
    assert!(why.contains("tokens today (UTC)"), "{why}");
    // The marks are events of the runs that crossed them: soft, then hard, once each.
    let mut marks = Vec::new();
    for id in &ids {
        let (status, events) = server.call("GET", &format!("/v1/runs/{id}/report"), None);
        assert_eq!(status, 200);
        for e in events["events"].as_array().cloned().unwrap_or_default() {
            if e["type"] == "quota" {
                marks.push(e["data"]["mark"].as_str().unwrap_or("?").to_string());
            }
        }
    }
    marks.sort();
    assert_eq!(marks, vec!["hard", "soft"], "one soft and one hard mark");
    // A raise lets the rest go.
    client.ok(&["quota", "set", "team", "--tokens-per-day", "100k"]);
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| stopped(r))
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    for id in ids.iter().filter(|id| !failed.contains(id)) {
        assert_eq!(client.ok(&["wait", id]), "0", "run {id}");
    }
}

#[test]
fn quotas_are_set_listed_and_removed_through_the_api_and_bad_values_are_400() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let out = client.run(&[
        "quota",
        "set",
        "team",
        "--usd-per-month",
        "500",
        "--on-hard",
        "refuse",
        "--max-live-runs",
        "10",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quota team usd_per_month: $0.00/$500.00"),
        "{stderr}"
    );
    let (status, listed) = server.call("GET", "/v1/quotas?project=team", None);
    assert_eq!(status, 200, "{listed}");
    let limits: Vec<&str> = listed["quotas"]
        .as_array()
        .expect("quotas")
        .iter()
        .map(|q| q["limit"].as_str().expect("limit"))
        .collect();
    assert_eq!(limits, vec!["max_live_runs", "usd_per_month"]);
    assert_eq!(listed["quotas"][1]["on_hard"], "refuse");
    for (body, says) in [
        (
            json!({"tokens_per_day": "lots"}),
            "is not a number of tokens",
        ),
        (json!({"usd_per_day": 0}), "is not an amount of USD"),
        (
            json!({"max_live_runs": 3, "soft": "120%"}),
            "is not a percentage",
        ),
        (
            json!({"max_live_runs": 3, "on_hard": "kill"}),
            "is not an action",
        ),
        (json!({"usd": 3}), "is not a quota limit"),
        (json!({}), "no limit given"),
    ] {
        let (status, answer) = server.call("PUT", "/v1/quotas/team", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "bad_request");
        assert!(
            answer["message"].as_str().unwrap_or("").contains(says),
            "{body}: {answer}"
        );
    }
    let (status, answer) = server.call(
        "PUT",
        "/v1/quotas/Team!",
        Some(&json!({"max_live_runs": 1})),
    );
    assert_eq!(status, 400, "{answer}");
    let err = client.fails(&["quota", "set", "team", "--tokens-per-day", "2.5"], 125);
    assert!(err.contains("is not a number of tokens"), "{err}");
    client.ok(&["quota", "rm", "team", "--limit", "max-live-runs"]);
    let (_, listed) = server.call("GET", "/v1/quotas", None);
    assert_eq!(listed["quotas"].as_array().map(Vec::len), Some(1));
    let err = client.fails(&["quota", "rm", "team", "--limit", "max-live-runs"], 125);
    assert!(err.contains("has no such quota"), "{err}");
    client.ok(&["quota", "rm", "team"]);
    let (_, listed) = server.call("GET", "/v1/quotas", None);
    assert_eq!(listed["quotas"], json!([]));
}
