//! Promises 1 and 2: attempts and the retry policy.

use crate::common;

use common::{Dispatch, eventually};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_failing_agent_is_retried_with_backoff_and_each_attempt_is_recorded() {
    let d = Dispatch::new();
    let agent = d.agent(
        "flaky",
        "echo \"try $DISPATCH_ATTEMPT\"\n\
         echo '{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":10,\"output_tokens\":1}' >> \"$DISPATCH_EVENTS\"\n\
         [ \"$DISPATCH_ATTEMPT\" -ge 3 ] || exit 3\n",
    );
    let id = d.ok(&[
        "run",
        path(&agent),
        "--detach",
        "--retries",
        "2",
        "--backoff",
        "50ms..100ms",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["attempt"], 3);
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    for a in &attempts[..2] {
        assert_eq!(a["status"], "failed");
        assert_eq!(a["exit_code"], 3);
        assert_eq!(a["error"], "agent exited with code 3");
        assert!(a["ended_at"].as_i64().is_some());
        assert_eq!(a["usage"]["input_tokens"], 10, "usage per attempt");
    }
    assert_eq!(attempts[2]["status"], "succeeded");
    let log = d.ok(&["logs", &id]);
    for n in 1..=3 {
        assert!(
            log.contains(&format!("[dispatch] attempt {n} of 3")),
            "{log}"
        );
        assert!(log.contains(&format!("try {n}")), "{log}");
    }
    assert!(log.contains("retrying in"), "{log}");
    let second = d.ok(&["logs", &id, "--attempt", "2"]);
    assert!(second.starts_with("[dispatch] attempt 2 of 3"), "{second}");
    assert!(second.contains("try 2") && !second.contains("try 1") && !second.contains("try 3"));
    d.fails(&["logs", &id, "--attempt", "4"], 125);
}

#[test]
fn a_run_waiting_for_its_next_attempt_is_queued_with_its_not_before_time() {
    let d = Dispatch::new();
    let agent = d.agent("later", "[ \"$DISPATCH_ATTEMPT\" -ge 2 ] || exit 1\n");
    let id = d.ok(&[
        "run",
        path(&agent),
        "--detach",
        "--retries",
        "1",
        "--backoff",
        "1500ms..1500ms",
    ]);
    eventually(10, "the run waits for attempt 2", || {
        let doc = d.inspect(&id);
        doc["status"] == "queued" && doc["state"]["not_before"].as_i64().is_some()
    });
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("queued (retry in"), "{ps}");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
}

#[test]
fn an_agent_declared_non_retryable_error_is_not_retried() {
    let d = Dispatch::new();
    let agent = d.agent(
        "picky",
        "echo '{\"type\":\"error\",\"message\":\"payload has no name\",\"retryable\":false}' >> \"$DISPATCH_EVENTS\"\nexit 2\n",
    );
    let id = d.ok(&[
        "run",
        path(&agent),
        "--detach",
        "--retries",
        "3",
        "--backoff",
        "10ms..10ms",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["attempt"], 1, "not retried");
    assert_eq!(doc["state"]["reason"], "payload has no name");
}

#[test]
fn the_agentfile_retry_policy_applies_without_flags() {
    let d = Dispatch::new();
    let agent = d.agent_with(
        "policy",
        "[ \"$DISPATCH_ATTEMPT\" -ge 2 ] || exit 1\n",
        "RETRY 2 BACKOFF 10ms..20ms\n",
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["attempt"], 2);
}

#[test]
fn a_lost_helper_with_attempts_left_is_recovered_by_a_fresh_helper() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent(
        "survivor",
        &format!(
            "[ \"$DISPATCH_ATTEMPT\" -ge 2 ] || sleep 30\nwhile [ ! -e {} ]; do sleep 0.02; done\n",
            gate.display()
        ),
    );
    let id = d.ok(&["run", path(&agent), "--detach", "--retries", "1"]);
    eventually(10, "the run is running", || d.status(&id) == "running");
    let helper = d.inspect(&id)["state"]["helper"]["pid"]
        .as_i64()
        .expect("a helper pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the helper");
    eventually(10, "a fresh helper runs attempt 2", || {
        let doc = d.inspect(&id);
        doc["status"] == "running" && doc["attempt"] == 2
    });
    std::fs::write(&gate, b"").expect("open the gate");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let lost = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["type"] == "state" && e["data"]["lost"] == true);
    assert!(lost, "the recovery is on the record");
}

/// Whether the run is queued for its next attempt (not merely created).
fn waiting_for_retry(d: &Dispatch, id: &str) -> bool {
    let doc = d.inspect(id);
    doc["status"] == "queued" && doc["state"]["not_before"].as_i64().is_some()
}

/// The pid of the live helper process of run `id`: a spawned one is found by
/// its command line; the one `run` forks is named `dispatch-helper` and
/// carries this test's state directory in its environment (one run each).
fn helper_of(d: &Dispatch, id: &str) -> Option<i32> {
    let root = d.root();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        if state == "Z" {
            return None;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("internal run-record") && cmd.contains(id) {
            return Some(pid);
        }
        // A forked helper wipes the environment /proc shows: it is known by
        // the files of this state directory it holds open (the run's log).
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let forked = comm.trim() == "dispatch-helper"
            && std::fs::read_dir(e.path().join("fd"))
                .ok()?
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| target.starts_with(&root));
        forked.then_some(pid)
    })
}

#[test]
fn stopping_a_run_during_its_backoff_cancels_it() {
    let d = Dispatch::new();
    let agent = d.agent("patient", "exit 1\n");
    let id = d.ok(&[
        "run",
        path(&agent),
        "--detach",
        "--retries",
        "3",
        "--backoff",
        "30s..30s",
    ]);
    eventually(10, "the run waits for attempt 2", || {
        waiting_for_retry(&d, &id)
    });
    d.ok(&["stop", &id]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "cancelled");
    eventually(10, "the waiting helper exits", || {
        helper_of(&d, &id).is_none()
    });
}

#[test]
fn a_helper_lost_during_its_backoff_is_replaced_once_the_run_is_overdue() {
    let d = Dispatch::new();
    let agent = d.agent("orphan", "[ \"$DISPATCH_ATTEMPT\" -ge 2 ] || exit 1\n");
    let id = d.ok(&[
        "run",
        path(&agent),
        "--detach",
        "--retries",
        "1",
        "--backoff",
        "500ms..500ms",
    ]);
    eventually(10, "the run waits for attempt 2", || {
        waiting_for_retry(&d, &id)
    });
    let helper = helper_of(&d, &id).expect("the helper waits out the backoff");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the helper");
    // Readers (here `inspect-run`) spawn a fresh helper once the run is overdue.
    eventually(15, "the run succeeds on attempt 2", || {
        d.status(&id) == "succeeded"
    });
    assert_eq!(d.inspect(&id)["attempt"], 2);
}

#[test]
fn every_local_attempt_gets_a_higher_fencing_token() {
    let d = Dispatch::new();
    let agent = d.agent(
        "fenced",
        "echo \"try $DISPATCH_ATTEMPT fence $DISPATCH_FENCE\"\n\
         [ \"$DISPATCH_ATTEMPT\" -ge 3 ] || exit 3\n",
    );
    let id = d.ok(&[
        "run",
        path(&agent),
        "--detach",
        "--retries",
        "2",
        "--backoff",
        "50ms..100ms",
    ]);
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    let log = d.ok(&["logs", &id]);
    let fences: Vec<i64> = (1..=3)
        .map(|n| {
            let prefix = format!("try {n} fence ");
            log.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("attempt {n} got DISPATCH_FENCE: {log}"))
        })
        .collect();
    assert!(fences[0] >= 1, "{fences:?}");
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "each attempt's token is higher: {fences:?}"
    );
}
