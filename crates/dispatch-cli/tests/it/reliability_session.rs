//! Promise 10: sessions persist state across runs; one live run per session.

use crate::common;

use common::{Dispatch, alive, eventually};

#[test]
fn a_session_file_persists_across_runs_and_a_second_live_run_is_rejected() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent(
        "chat",
        &format!(
            "n=$(cat \"$DISPATCH_SESSION_FILE\" 2>/dev/null || echo 0)\n\
             echo $((n+1)) > \"$DISPATCH_SESSION_FILE\"\n\
             while [ ! -e {} ]; do sleep 0.02; done\n",
            gate.display()
        ),
    );
    let a = agent.to_str().expect("utf-8");
    let first = d.ok(&["run", a, "--detach", "--session", "alice"]);
    eventually(10, "the first run is running", || {
        d.status(&first) == "running"
    });
    let err = d.fails(&["run", a, "--detach", "--session", "alice"], 125);
    assert!(
        err.contains(&format!("session `chat/alice` is in use by run {first}")),
        "{err}"
    );
    let other = d.ok(&["run", a, "--detach", "--session", "bob"]);
    std::fs::write(&gate, b"").expect("open the gate");
    d.wait_terminal(&first);
    d.wait_terminal(&other);
    let second = d.ok(&["run", a, "--detach", "--session", "alice"]);
    assert_eq!(d.wait_terminal(&second)["status"], "succeeded");
    let file = d.root().join("state/chat/sessions/alice.json");
    assert_eq!(
        std::fs::read_to_string(&file).expect("session file").trim(),
        "2"
    );
    let bad = d.fails(&["run", a, "--detach", "--session", "../x"], 125);
    assert!(bad.contains("invalid session name"), "{bad}");
}

#[test]
fn a_session_held_by_a_run_whose_helper_died_is_freed_by_reconciliation() {
    let d = Dispatch::new();
    let agent = d.agent("lost", "sleep 30\n");
    let a = agent.to_str().expect("utf-8");
    let first = d.ok(&["run", a, "--detach", "--session", "s"]);
    eventually(10, "the first run is running", || {
        d.status(&first) == "running"
    });
    let helper = d.inspect(&first)["state"]["helper"]["pid"]
        .as_i64()
        .expect("a helper pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the helper");
    eventually(10, "the helper is gone", || !alive(helper as u32));
    // No reader has looked at the run since; dispatching reconciles the holder.
    let second = d.ok(&["run", a, "--detach", "--session", "s"]);
    assert_ne!(second, first);
    let doc = d.inspect(&first);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    d.ok(&["stop", &second]);
}
