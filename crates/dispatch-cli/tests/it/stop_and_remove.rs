//! stop, rm, prune and restart from the binary, with real process trees.

use crate::common;

use common::{Dispatch, alive, eventually};

/// An agent that ignores SIGTERM itself, with a child that ignores it too
/// and a grandchild; every pid is appended to `pids`. Only SIGKILL ends it.
fn stubborn_tree(d: &Dispatch) -> (std::path::PathBuf, std::path::PathBuf) {
    let pids = d.dir.path().join("pids");
    let script = format!(
        r#"P={pids}
trap "" TERM
sh -c 'trap "" TERM; while true; do sleep 0.05; done' &
echo $! >> "$P"
sh -c 'sleep 300 & echo $! >> "$0"; wait' "$P" &
echo $! >> "$P"
echo $$ >> "$P"
wait
"#,
        pids = pids.display()
    );
    let dir = d.agent("stubborn", &script);
    // Exec form: the group leader is the script itself, not a wrapping `sh -c`.
    std::fs::write(
        dir.join("Agentfile"),
        "NAME stubborn\nCOPY agent.sh\nCOMMAND [\"sh\", \"agent.sh\"]\n",
    )
    .expect("write Agentfile");
    (dir, pids)
}

fn read_pids(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn stop_kills_the_whole_tree_including_a_term_ignoring_child() {
    let d = Dispatch::new();
    let (agent, pids_file) = stubborn_tree(&d);
    let id = d.detach(&agent, "{}");
    eventually(10, "all four pids written", || {
        read_pids(&pids_file).len() == 4
    });
    let pids = read_pids(&pids_file);
    assert!(pids.iter().all(|p| alive(*p)), "tree is up: {pids:?}");
    let t0 = std::time::Instant::now();
    assert_eq!(d.ok(&["stop", "--grace-period-ms", "300", &id]), id);
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(300),
        "SIGTERM is ignored, so only the SIGKILL after the grace period ends it"
    );
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "stopped by user");
    eventually(5, "no descendant survives", || {
        pids.iter().all(|p| !alive(*p))
    });
    let err = d.fails(&["stop", &id], 125);
    assert!(
        err.contains("already cancelled"),
        "stopping a finished run: {err}"
    );
}

#[test]
fn stop_force_kills_without_grace() {
    let d = Dispatch::new();
    let (agent, pids_file) = stubborn_tree(&d);
    let id = d.detach(&agent, "{}");
    eventually(10, "tree up", || read_pids(&pids_file).len() == 4);
    // A 10-minute grace period that --force skips.
    d.ok(&["stop", "--grace-period-ms", "600000", "--force", &id]);
    assert_eq!(d.status(&id), "cancelled");
    let pids = read_pids(&pids_file);
    eventually(5, "tree gone", || pids.iter().all(|p| !alive(*p)));
}

#[test]
fn rm_refuses_a_live_run_then_force_removes_it() {
    let d = Dispatch::new();
    let agent = d.agent("sleeper", "sleep 300\n");
    let id = d.detach(&agent, "{}");
    eventually(10, "running", || d.status(&id) == "running");
    let err = d.fails(&["rm", &id], 125);
    assert!(err.contains("rm -f"), "{err}");
    assert_eq!(d.status(&id), "running", "a refused rm changes nothing");
    assert_eq!(d.ok(&["rm", "-f", &id]), id);
    assert!(d.ok(&["ps", "-a", "-q"]).is_empty());
    assert!(!d.root().join("runs").join(format!("{id}.log")).exists());
    let err = d.fails(&["inspect-run", &id], 125);
    assert!(err.contains("no run matches"), "{err}");
}

#[test]
fn prune_removes_finished_runs_and_keeps_live_ones() {
    let d = Dispatch::new();
    let quick = d.agent("quick", "exit 0\n");
    let slow = d.agent("slow", "sleep 300\n");
    let done = d.detach(&quick, "{}");
    d.ok(&["wait", &done]);
    let live = d.detach(&slow, "{}");
    eventually(10, "running", || d.status(&live) == "running");
    assert_eq!(d.ok(&["prune", "-f"]), done);
    assert_eq!(d.ok(&["ps", "-a", "-q"]), live);
    d.ok(&["container", "rm", "-f", &live]);
}

#[test]
fn restart_runs_the_same_payload_as_a_new_linked_run() {
    let d = Dispatch::new();
    let agent = d.agent("echoer", "cat\n");
    let first = d.detach(&agent, r#"{"n":1}"#);
    d.ok(&["wait", &first]);
    let second = d.ok(&["restart", &first]);
    assert_ne!(second, first);
    let doc = d.wait_terminal(&second);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["origin_id"], first.as_str());
    assert_eq!(doc["payload"]["n"], 1);
    assert!(
        d.ok(&["logs", &second]).contains(r#"{"n":1}"#),
        "payload on stdin"
    );
}

#[test]
fn container_aliases_drive_the_same_runs() {
    let d = Dispatch::new();
    let agent = d.agent("alias", "echo hi\n");
    let id = d.detach(&agent, "{}");
    assert_eq!(d.ok(&["container", "wait", &id]), "0");
    assert!(d.ok(&["container", "ls", "-a", "-q"]).contains(&id));
    assert!(d.ok(&["container", "ps", "-a", "-q"]).contains(&id));
    assert!(d.ok(&["container", "logs", &id]).contains("hi"));
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["container", "inspect", &id, "--format", "json"]))
            .expect("json");
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(d.ok(&["container", "prune", "-f"]), id);
}

#[test]
fn stop_t_is_in_seconds_as_podman_s() {
    let d = Dispatch::new();
    let mark = d.dir.path().join("graceful");
    let agent = d.agent(
        "tidy",
        &format!(
            "trap 'sleep 0.3; echo done > \"{}\"; exit 0' TERM\nwhile true; do sleep 0.05; done\n",
            mark.display()
        ),
    );
    // Exec form: the group leader is the script itself, which traps TERM.
    std::fs::write(
        agent.join("Agentfile"),
        "NAME tidy\nCOPY agent.sh\nCOMMAND [\"sh\", \"agent.sh\"]\n",
    )
    .expect("write Agentfile");
    let id = d.detach(&agent, "{}");
    eventually(10, "running", || d.status(&id) == "running");
    // One second is time enough to finish the 0.3 s of cleanup (one
    // millisecond would not be).
    d.ok(&["stop", "-t", "1", &id]);
    assert!(
        mark.exists(),
        "the agent finished its cleanup within the grace period"
    );
    let e = d.fails(&["stop", "-t", "1", "--grace-period-ms", "5", &id], 2);
    assert!(e.contains("cannot be used with"), "{e}");
}

#[test]
fn a_created_run_is_shown_as_created_until_it_is_started() {
    let d = Dispatch::new();
    let agent = d.agent("later", "echo started");
    let id = d.ok(&["create", agent.to_str().expect("utf-8 path")]);
    assert_eq!(d.status(&id), "created");
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("created"), "{ps}");
    let filtered = d.ok(&["ps", "--filter", "status=created", "-q"]);
    assert_eq!(filtered, id, "{filtered}");
    d.ok(&["start", &id]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["attempt"], 1, "starting is not a retry: {doc:#}");
    // A created run that is stopped never runs.
    let other = d.ok(&["create", agent.to_str().expect("utf-8 path")]);
    d.ok(&["stop", &other]);
    let doc = d.inspect(&other);
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    assert!(
        doc["attempts"].as_array().is_some_and(|a| a.is_empty()),
        "{doc:#}"
    );
}
