//! Services woken by schedules: fires on the expected seconds, persisted
//! timers, restart without repeating flags, one catch-up after downtime, and
//! bad options refused before anything starts.

use crate::common;
use crate::service_common;

use common::{Dispatch, eventually};
use dispatch_core::now_ms;
use service_common::{ECHO_AGENT, Service, wait_heartbeats_done};

#[test]
fn a_seconds_schedule_fires_on_its_seconds_and_records_last_fired_at() {
    let d = Dispatch::new();
    let agent = d.agent("tick", ECHO_AGENT);
    let svc = Service::start(&d, &agent, &["--schedule", "*/2 * * * * *"]);
    eventually(10, "two scheduled heartbeats", || {
        svc.heartbeats().len() >= 2
    });
    for hb in svc.heartbeats() {
        assert_eq!(hb["operation"], "heartbeat");
        assert_eq!(hb["parent_id"].as_str(), Some(svc.id.as_str()));
        let wake = &hb["payload"]["wake"];
        assert_eq!(wake["reason"], "schedule", "{hb:#}");
        assert_eq!(wake["schedule"], "*/2 * * * * *");
        let due = wake["scheduled_for"].as_i64().expect("scheduled_for");
        assert_eq!(due % 2000, 0, "fires on even seconds");
        let created = hb["created_at"].as_i64().expect("created_at");
        // Created right after its second (with room for a loaded machine).
        assert!(
            created >= due && created < due + 1500,
            "created {created} shortly after {due}"
        );
    }
    let state = svc.service_state();
    let timer = &state["schedules"][0];
    assert_eq!(timer["expr"], "*/2 * * * * *");
    let last = timer["last_fired_at"].as_i64().expect("last_fired_at");
    let next = timer["next_fire_at"].as_i64().expect("next_fire_at");
    assert!(next > last && next % 2000 == 0, "{timer}");
    assert!(
        state["config"]["interval_ms"].is_null(),
        "no plain interval next to a schedule"
    );
    wait_heartbeats_done(&svc, 10);
    let done = d.wait_terminal(svc.heartbeats()[0]["id"].as_str().expect("id"));
    assert_eq!(done["status"], "succeeded", "{done:#}");
    svc.stop(5_000);
    assert_eq!(d.status(&svc.id), "stopped");
}

#[test]
fn a_restarted_service_keeps_its_schedules_and_catches_up_once() {
    let d = Dispatch::new();
    let agent = d.agent_with("cron", ECHO_AGENT, "SCHEDULE \"*/2 * * * * *\"\n");
    let svc = Service::start(
        &d,
        &agent,
        &[
            "--schedule",
            "0 0 1 1 *",
            "--payload",
            r#"{"check":"disk"}"#,
        ],
    );
    eventually(10, "a first fire", || !svc.heartbeats().is_empty());
    svc.stop(5_000);
    let before = svc.service_state();
    let next = before["schedules"][0]["next_fire_at"]
        .as_i64()
        .expect("a persisted next fire");
    // Downtime: let two fires pass while nothing runs.
    eventually(10, "two fires missed", || now_ms() > next + 2_000);
    let new_id = d.ok(&["restart", &svc.id]);
    let restarted = Service::adopt(&d, new_id.clone());
    let doc = d.inspect(&new_id);
    assert_eq!(doc["origin_id"].as_str(), Some(svc.id.as_str()));
    let after = restarted.service_state();
    let exprs = |s: &serde_json::Value| -> Vec<String> {
        s["schedules"]
            .as_array()
            .expect("schedules")
            .iter()
            .map(|t| t["expr"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        exprs(&after),
        exprs(&before),
        "same schedules without flags"
    );
    assert_eq!(exprs(&after), vec!["*/2 * * * * *", "0 0 1 1 *"]);
    eventually(10, "the catch-up wake", || {
        !restarted.heartbeats().is_empty()
    });
    let first = restarted
        .heartbeats()
        .last()
        .cloned()
        .expect("one heartbeat");
    let wake = &first["payload"]["wake"];
    assert_eq!(wake["reason"], "recovery", "{first:#}");
    assert_eq!(wake["previous_run_id"].as_str(), Some(svc.id.as_str()));
    assert_eq!(wake["missed"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["payload"]["payload"]["check"], "disk");
    let recoveries = restarted
        .heartbeats()
        .iter()
        .filter(|h| h["payload"]["wake"]["reason"] == "recovery")
        .count();
    assert_eq!(recoveries, 1, "missed fires do not stampede");
    restarted.stop(5_000);
}

#[test]
fn bad_service_options_are_refused_before_anything_starts() {
    let d = Dispatch::new();
    let agent = d.agent("bad", ECHO_AGENT);
    let dir = agent.to_str().expect("utf-8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--schedule", "*/10 * 25 * * *"], "the hour field `25`"),
        (vec!["--schedule", "* * *"], "3 fields"),
        (vec!["--listen", "nowhere"], "cannot listen on `nowhere`"),
        (
            vec!["--listen", "127.0.0.1:0", "--listen-path", "hook"],
            "must start with `/`",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--listen-method", "FETCH"],
            "unknown HTTP method `FETCH`",
        ),
        (vec!["--listen-path", "/x"], "need an address"),
    ];
    for (args, says) in cases {
        let mut all = vec!["serve", dir, "--detach"];
        all.extend(args.iter().copied());
        let err = d.fails(&all, 125);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // A port another process holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = d.fails(&["serve", dir, "--detach", "--listen", &addr], 125);
    assert!(err.contains("address already in use"), "{err}");
    // LISTEN_SECRET naming a declared SECRET that is not set.
    let hook = d.agent_with(
        "hook",
        ECHO_AGENT,
        "SECRET HOOK_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_SECRET HOOK_TOKEN\n",
    );
    let out = d
        .command()
        .args(["serve", hook.to_str().expect("utf-8"), "--detach"])
        .env_remove("HOOK_TOKEN")
        .output()
        .expect("run dispatch");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOOK_TOKEN"), "{err}");
    // LISTEN_SECRET naming an undeclared SECRET: the Agentfile is refused.
    let undeclared = d.agent_with(
        "undeclared",
        ECHO_AGENT,
        "LISTEN 127.0.0.1:0\nLISTEN_SECRET NOPE\n",
    );
    let err = d.fails(
        &["serve", undeclared.to_str().expect("utf-8"), "--detach"],
        125,
    );
    assert!(err.contains("not a declared SECRET"), "{err}");
    assert!(d.ok(&["ps", "-a", "-q"]).is_empty(), "nothing was created");
}
