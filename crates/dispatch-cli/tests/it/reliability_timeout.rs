//! Promise 3: run and step timeouts stop the process group and end the
//! attempt `timed_out`, naming the step.

use crate::common;

use common::{Dispatch, alive};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An agent that starts step `fetch`, leaves a grandchild sleeping and records its pid.
fn stuck_agent(d: &Dispatch, name: &str, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pidfile = d.dir.path().join(format!("{name}.pid"));
    let agent = d.agent_with(
        name,
        &format!(
            "echo '{{\"type\":\"step\",\"name\":\"fetch\",\"phase\":\"start\"}}' >> \"$DISPATCH_EVENTS\"\n\
             sleep 30 &\necho $! > {}\nwait\n",
            pidfile.display()
        ),
        extra,
    );
    (agent, pidfile)
}

fn grandchild(pidfile: &std::path::Path) -> u32 {
    std::fs::read_to_string(pidfile)
        .expect("the agent wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn a_step_timeout_names_the_step_and_stops_the_whole_group() {
    let d = Dispatch::new();
    let (agent, pidfile) = stuck_agent(&d, "stuck", "");
    let id = d.ok(&["run", path(&agent), "--detach", "--step-timeout", "300ms"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "timed_out", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert_eq!(reason, "step `fetch` timed out after 300ms");
    assert_eq!(doc["attempts"][0]["status"], "timed_out");
    assert!(!alive(grandchild(&pidfile)), "no descendant survives");
}

#[test]
fn a_run_timeout_from_the_agentfile_ends_the_attempt_timed_out_and_is_retried() {
    let d = Dispatch::new();
    let (agent, pidfile) = stuck_agent(
        &d,
        "slowpoke",
        "TIMEOUT RUN 400ms\nRETRY 2 BACKOFF 10ms..10ms\n",
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "timed_out", "{doc:#}");
    assert_eq!(doc["attempt"], 2, "a timeout is retryable");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("run timed out after 400ms during step `fetch`"),
        "{reason}"
    );
    for a in doc["attempts"].as_array().expect("attempts") {
        assert_eq!(a["status"], "timed_out", "{a}");
    }
    assert!(!alive(grandchild(&pidfile)), "no descendant survives");
}

#[test]
fn an_agent_ignoring_sigterm_is_killed_after_the_grace_period() {
    let d = Dispatch::new();
    let pidfile = d.dir.path().join("stubborn.pid");
    let agent = d.agent(
        "stubborn",
        &format!(
            "trap '' TERM\necho $$ > {}\nwhile true; do sleep 0.05; done\n",
            pidfile.display()
        ),
    );
    // Exec form: the shell that ignores SIGTERM leads the process group.
    std::fs::write(
        agent.join("Agentfile"),
        "FROM process\nNAME stubborn\nCOPY agent.sh\nCOMMAND [\"sh\", \"agent.sh\"]\n",
    )
    .expect("write Agentfile");
    let id = d.ok(&["run", path(&agent), "--detach", "--timeout", "200ms"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "timed_out");
    assert_eq!(doc["exit_code"], 137, "SIGKILL after the grace period");
    assert!(!alive(grandchild(&pidfile)), "the stubborn shell is gone");
}
