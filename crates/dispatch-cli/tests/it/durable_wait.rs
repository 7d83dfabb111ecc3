//! Durable waits: an agent that writes a `wait` event and exits 0 suspends its
//! run (paused, no process), and a signal, a decision or a timer starts its
//! next attempt with what woke it in `$DISPATCH_RESUME` and its checkpoint.

use crate::common;

use common::{Dispatch, eventually, processes_of};
use serde_json::Value;

/// Waits for `what` on its first attempt (after a checkpoint); on the next
/// one prints and returns what woke it.
fn waiting_for(what: &str) -> String {
    format!(
        "if [ -z \"$DISPATCH_RESUME\" ]; then\n\
           echo '{{\"type\":\"checkpoint\",\"step\":\"asked\",\"state\":{{\"n\":1}}}}' >> \"$DISPATCH_EVENTS\"\n\
           echo '{what}' >> \"$DISPATCH_EVENTS\"\n\
           exit 0\n\
         fi\n\
         echo \"attempt $DISPATCH_ATTEMPT checkpoint $(cat \"$DISPATCH_CHECKPOINT\")\"\n\
         cp \"$DISPATCH_RESUME\" \"$DISPATCH_OUTPUT\"\n"
    )
}

fn suspended(d: &Dispatch, id: &str) -> bool {
    d.ok(&["ps", "-a"]).contains("(suspended)") && d.inspect(id)["state"]["status"] == "suspended"
}

#[test]
fn a_suspended_run_holds_no_process_and_a_signal_resumes_it_with_its_value() {
    let d = Dispatch::new();
    let agent = d.agent(
        "waiter",
        &waiting_for(r#"{"type":"wait","for":"signal","name":"payment"}"#),
    );
    let id = d.detach(&agent, "{}");
    eventually(10, "the run is suspended", || suspended(&d, &id));
    assert_eq!(d.status(&id), "paused");
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("paused: waiting for signal `payment`"), "{ps}");
    eventually(5, "no process of the run is left", || {
        processes_of(&id).is_empty()
    });

    let out = d.run(&["signal", &id[..8], "payment", "--value", r#"{"amount":12}"#]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("woke"),
        "{out:?}"
    );
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        doc["output"],
        serde_json::json!({"for": "signal", "name": "payment", "value": {"amount": 12}})
    );
    assert_eq!(doc["attempt"], 2);
    let log = d.ok(&["logs", &id]);
    assert!(
        log.contains(
            r#"attempt 2 checkpoint {"state":{"n":1},"step":"asked","type":"checkpoint"}"#
        ),
        "the next attempt has the checkpoint: {log}"
    );
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{doc:#}");
    assert_eq!(
        attempts[0]["error"],
        "suspended: waiting for signal `payment`"
    );
}

#[test]
fn a_signal_sent_before_the_wait_is_kept_and_taken_once() {
    let d = Dispatch::new();
    // Waits twice for the same signal: the kept one wakes the first wait only.
    let agent = d.agent(
        "early",
        "sleep 0.5\n\
         if [ -z \"$DISPATCH_RESUME\" ] || [ \"$DISPATCH_ATTEMPT\" = 2 ]; then\n\
           echo '{\"type\":\"wait\",\"for\":\"signal\",\"name\":\"go\"}' >> \"$DISPATCH_EVENTS\"\n\
           exit 0\n\
         fi\n\
         cp \"$DISPATCH_RESUME\" \"$DISPATCH_OUTPUT\"\n",
    );
    let id = d.detach(&agent, "{}");
    let out = d.run(&["signal", &id, "go", "--value", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kept"),
        "{out:?}"
    );
    eventually(10, "the second wait suspends the run", || {
        d.inspect(&id)["attempt"] == 2 && suspended(&d, &id)
    });
    d.ok(&["signal", &id, "go", "--value", "2"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["value"], 2, "{doc:#}");
    assert_eq!(doc["attempt"], 3);
}

#[test]
fn a_decision_wakes_a_run_suspended_on_an_approval() {
    let d = Dispatch::new();
    let agent = d.agent(
        "asker",
        &waiting_for(
            r#"{"type":"wait","for":"approval","id":"refund","summary":"Refund 12 EUR?"}"#,
        ),
    );
    let id = d.detach(&agent, "{}");
    eventually(10, "the run is suspended", || suspended(&d, &id));
    let pending: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("JSON");
    assert_eq!(pending[0]["id"], "refund", "{pending:#}");
    assert_eq!(pending[0]["summary"], "Refund 12 EUR?");
    d.ok(&["approve", &id, "refund", "--by", "ada", "--rationale", "ok"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["decision"], "approve");
    assert_eq!(doc["output"]["by"], "ada");
}

#[test]
fn a_timer_wakes_the_run_when_it_rings_and_waits_do_not_use_up_retries() {
    let d = Dispatch::new();
    // RETRY 1: one attempt in all; the woken attempts do not count.
    let agent = d.agent_with(
        "sleeper",
        "if [ \"$DISPATCH_ATTEMPT\" -lt 3 ]; then\n\
           echo '{\"type\":\"wait\",\"for\":\"timer\",\"seconds\":0.2}' >> \"$DISPATCH_EVENTS\"\n\
           exit 0\n\
         fi\n\
         cp \"$DISPATCH_RESUME\" \"$DISPATCH_OUTPUT\"\n",
        "RETRY 1\n",
    );
    let id = d.detach(&agent, "{}");
    // Daemonless: whoever looks (here `wait`) wakes a run whose timer rang.
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["attempt"], 3);
    assert_eq!(doc["output"]["for"], "timer");
}

#[test]
fn a_signal_wait_times_out_into_the_next_attempt() {
    let d = Dispatch::new();
    let agent = d.agent(
        "impatient",
        &waiting_for(r#"{"type":"wait","for":"signal","name":"never","timeout_s":0.2}"#),
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["timed_out"], true, "{doc:#}");
}

#[test]
fn a_suspended_run_stops_at_once_and_signals_to_ended_runs_are_refused() {
    let d = Dispatch::new();
    let agent = d.agent(
        "stopped",
        &waiting_for(r#"{"type":"wait","for":"signal","name":"go"}"#),
    );
    let id = d.detach(&agent, "{}");
    eventually(10, "the run is suspended", || suspended(&d, &id));
    d.ok(&["stop", &id]);
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    assert!(
        doc["state"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for signal `go`")),
        "{doc:#}"
    );
    let err = d.fails(&["signal", &id, "go"], 125);
    assert!(err.contains("already cancelled"), "{err}");
    let err = d.fails(&["signal", &id, "go", "--value", "{nope"], 125);
    assert!(err.contains("--value is not JSON"), "{err}");
    let err = d.fails(&["signal", &id, "no spaces"], 125);
    assert!(err.contains("invalid signal name"), "{err}");
    let err = d.fails(&["signal", "ffffffff", "go"], 125);
    assert!(err.contains("ffffffff"), "{err}");
}

#[test]
fn a_malformed_wait_event_is_a_warning_and_the_run_just_succeeds() {
    let d = Dispatch::new();
    let agent = d.agent(
        "sloppy",
        "echo '{\"type\":\"wait\",\"for\":\"signal\"}' >> \"$DISPATCH_EVENTS\"\n",
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let warned = doc["events"].as_array().expect("events").iter().any(|e| {
        e["type"] == "warning"
            && e["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("needs a string `name`"))
    });
    assert!(warned, "{doc:#}");
}

#[test]
fn logs_attempt_numbers_attempts_as_the_store_does_after_a_wake() {
    let d = Dispatch::new();
    // RETRY 2: the woken attempt 2 counts as 1 of 2, and fails into attempt 3.
    let agent = d.agent_with(
        "woken",
        "echo \"output of attempt $DISPATCH_ATTEMPT\"\n\
         if [ \"$DISPATCH_ATTEMPT\" = 1 ]; then\n\
           echo '{\"type\":\"wait\",\"for\":\"signal\",\"name\":\"go\"}' >> \"$DISPATCH_EVENTS\"\n\
           exit 0\n\
         fi\n\
         [ \"$DISPATCH_ATTEMPT\" -ge 3 ]\n",
        "RETRY 2 BACKOFF 10ms..20ms\n",
    );
    let id = d.detach(&agent, "{}");
    eventually(10, "the run is suspended", || suspended(&d, &id));
    d.ok(&["signal", &id, "go"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["attempt"], 3, "{doc:#}");
    for n in 1..=3 {
        let section = d.ok(&["logs", &id, "--attempt", &n.to_string()]);
        assert!(
            section.starts_with(&format!("[dispatch] attempt {n} ")),
            "attempt {n}'s section starts at its line: {section}"
        );
        for m in 1..=3 {
            assert_eq!(
                section.contains(&format!("output of attempt {m}")),
                m == n,
                "attempt {n}'s section and attempt {m}'s output: {section}"
            );
        }
    }
    // The retry line agrees with the attempt's first line: attempt 2 did not
    // use up the retries (`attempt 2 of 2 failed` would say it did).
    let second = d.ok(&["logs", &id, "--attempt", "2"]);
    assert!(
        second.contains("[dispatch] attempt 2 (counts as 1 of 2) failed"),
        "{second}"
    );
    let err = d.fails(&["logs", &id, "--attempt", "4"], 125);
    assert!(err.contains("no attempt 4"), "{err}");
}
