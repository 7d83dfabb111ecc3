//! Readers drive runs whose helper died to a terminal state.

mod common;

use common::{Dispatch, alive, eventually};
use serde_json::json;

fn helper_and_agent(d: &Dispatch, id: &str) -> (u32, u32) {
    let doc = d.inspect(id);
    let pid = |k: &str| doc["state"][k]["pid"].as_u64().expect("pid") as u32;
    (pid("helper"), pid("agent"))
}

#[test]
fn ps_reconciles_a_sigkilled_helper_to_failed_and_kills_its_agent() {
    let d = Dispatch::new();
    let agent = d.agent("orphan", "sleep 300\n");
    let id = d.detach(&agent, "{}");
    eventually(10, "running", || d.status(&id) == "running");
    let (helper, agent_pid) = helper_and_agent(&d, &id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    eventually(5, "helper gone", || !alive(helper));
    let ps: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("json");
    let run = &ps[0];
    assert_eq!(run["status"], "failed", "{run:#}");
    let reason = run["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("helper process {helper}")),
        "{reason}"
    );
    eventually(5, "the agent does not outlive its helper", || {
        !alive(agent_pid)
    });
    assert!(d.ok(&["ps", "-q"]).is_empty(), "nothing stays live");
}

#[test]
fn the_final_snapshot_is_applied_when_the_database_write_is_missing() {
    let d = Dispatch::new();
    let agent = d.agent("snap", "sleep 300\n");
    let id = d.detach(&agent, "{}");
    eventually(10, "running", || d.status(&id) == "running");
    let (helper, _) = helper_and_agent(&d, &id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    eventually(5, "helper gone", || !alive(helper));
    // What the helper writes just before its last database write.
    let snapshot = json!({
        "run_id": id,
        "attempt": 1,
        "state": {"status": "succeeded", "started_at": 1, "ended_at": 2, "exit_code": 0},
        "output": {"answer": 42},
        "written_at": 2,
    });
    std::fs::write(
        d.root().join("runs").join(format!("{id}.final.json")),
        serde_json::to_vec(&snapshot).expect("json"),
    )
    .expect("write snapshot");
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["answer"], 42);
    let last = doc["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("an event")
        .clone();
    assert!(
        last["data"]["note"]
            .as_str()
            .expect("note")
            .contains("terminal snapshot"),
        "{last:#}"
    );
}
