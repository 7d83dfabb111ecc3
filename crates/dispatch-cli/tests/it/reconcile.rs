//! Readers drive runs whose helper died to a terminal state.

use crate::common;

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

/// A database locked (by another process, past the busy timeout) while a
/// finished run's result is saved: the result is kept (the helper's
/// terminal snapshot) and the run is not executed again.
#[test]
fn a_database_locked_through_the_final_write_keeps_the_result_and_runs_once() {
    let d = Dispatch::new();
    let marks = d.dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    let script = format!(
        "echo run >> '{m}/executions'\ntouch '{m}/finished'\nsleep 0.3\necho '{{\"answer\": 7}}' > \"$DISPATCH_OUTPUT\"\n",
        m = marks.display()
    );
    let agent = d.agent_with("locked", &script, "RETRY 3\n");
    let out = d
        .command()
        .args(["run", agent.to_str().expect("utf-8"), "--detach"])
        .env("DISPATCH_BUSY_TIMEOUT_MS", "200")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eventually(20, "the agent finished its work", || {
        marks.join("finished").exists()
    });
    // Another process holds the write lock through the agent's exit and the
    // helper's last writes (well past its 200 ms busy timeout).
    let db = rusqlite::Connection::open(d.root().join("dispatch.db")).expect("open db");
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    db.execute_batch("COMMIT").expect("unlock");
    drop(db);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["attempt"], 1, "{doc:#}");
    assert_eq!(doc["output"]["answer"], 7, "{doc:#}");
    let executions = std::fs::read_to_string(marks.join("executions")).expect("executions");
    assert_eq!(executions.lines().count(), 1, "executed once");
}
