//! Service lifecycle: manual wakes, graceful stop with a wake in flight, a
//! stop that ends a wake outliving the grace period, a dead helper
//! reconciled to `stopped` and brought back by `restart`.

use crate::common;
use crate::service_common;

use std::time::Instant;

use common::{Dispatch, alive, eventually};
use service_common::{ECHO_AGENT, Service};

#[test]
fn a_manual_wake_runs_a_heartbeat_with_its_payload() {
    let d = Dispatch::new();
    let agent = d.agent("manual", ECHO_AGENT);
    let svc = Service::start(&d, &agent, &["--interval-ms", "0"]);
    assert!(
        svc.service_state()["schedules"]
            .as_array()
            .expect("schedules")
            .is_empty()
    );
    let hb = d.ok(&["wake", &svc.id[..10], r#"{"turn":1}"#]);
    let done = d.wait_terminal(&hb);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["operation"], "heartbeat");
    assert_eq!(done["parent_id"].as_str(), Some(svc.id.as_str()));
    assert_eq!(done["output"]["wake"]["reason"], "manual");
    assert_eq!(done["output"]["payload"]["turn"], 1);
    let listed = d.ok(&["ps", "-a", "-q", "--parent", &svc.id]);
    assert_eq!(listed, hb);
    let err = d.fails(&["wake", &hb], 125);
    assert!(err.contains("not a service"), "{err}");
    svc.stop(5_000);
    let err = d.fails(&["wake", &svc.id], 125);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn a_plain_interval_is_the_default_without_schedules_or_listeners() {
    let d = Dispatch::new();
    let agent = d.agent("beat", ECHO_AGENT);
    let svc = Service::start(&d, &agent, &[]);
    let state = svc.service_state();
    assert_eq!(state["config"]["interval_ms"], 30_000);
    assert_eq!(state["schedules"][0]["kind"], "interval");
    drop(svc);
    let fast = Service::start(&d, &agent, &["--interval-ms", "300"]);
    eventually(10, "two interval wakes", || fast.heartbeats().len() >= 2);
    assert_eq!(
        fast.heartbeats()[0]["payload"]["wake"]["reason"],
        "interval"
    );
    fast.stop(5_000);
}

#[test]
fn stop_lets_the_wake_in_flight_finish_then_the_service_is_stopped() {
    let d = Dispatch::new();
    let agent = d.agent("slow", "sleep 1\necho finished\n");
    let svc = Service::start(
        &d,
        &agent,
        &["--interval-ms", "0", "--listen", "127.0.0.1:0", "--public"],
    );
    let addr = svc.bound_addr();
    let hb = d.ok(&["wake", &svc.id]);
    eventually(10, "the wake runs", || d.status(&hb) == "running");
    svc.stop(10_000);
    assert_eq!(d.status(&hb), "succeeded", "the wake in flight finished");
    let doc = d.inspect(&svc.id);
    assert_eq!(doc["status"], "stopped", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "stopped by user");
    assert!(!alive(svc.helper), "the helper is gone");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the listener is closed"
    );
}

#[test]
fn a_wake_outliving_the_grace_period_is_ended() {
    let d = Dispatch::new();
    let agent = d.agent("stuck", "sleep 300\n");
    let svc = Service::start(&d, &agent, &["--interval-ms", "0"]);
    let hb = d.ok(&["wake", &svc.id]);
    eventually(10, "the wake runs", || d.status(&hb) == "running");
    let queued = d.ok(&["wake", &svc.id]);
    assert_eq!(d.status(&queued), "queued", "one at a time by default");
    let started = Instant::now();
    svc.stop(300);
    assert!(
        started.elapsed().as_secs() < 8,
        "bounded by the grace period"
    );
    assert_eq!(d.status(&hb), "cancelled");
    let q = d.inspect(&queued);
    assert_eq!(q["status"], "cancelled", "{q:#}");
    assert_eq!(d.status(&svc.id), "stopped");
}

#[test]
fn a_dead_helper_is_reconciled_to_stopped_and_restart_brings_it_back() {
    let d = Dispatch::new();
    let agent = d.agent("fragile", ECHO_AGENT);
    let svc = Service::start(
        &d,
        &agent,
        &[
            "--interval-ms",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--listen-path",
            "/in",
            "--public",
        ],
    );
    let old_addr = svc.bound_addr();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(svc.helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the helper");
    eventually(5, "helper gone", || !alive(svc.helper));
    let doc = d.inspect(&svc.id);
    assert_eq!(doc["status"], "stopped", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("helper process"), "{reason}");
    let new_id = d.ok(&["restart", &svc.id]);
    let back = Service::adopt(&d, new_id);
    let policy = &back.service_state()["config"]["listen"];
    assert_eq!(policy["path"], "/in", "same listener policy");
    assert_ne!(back.bound_addr(), "", "bound again");
    let _ = old_addr;
    eventually(10, "the recovery wake", || !back.heartbeats().is_empty());
    let hb = &back.heartbeats()[0];
    assert_eq!(hb["payload"]["wake"]["reason"], "recovery", "{hb:#}");
    assert_eq!(hb["payload"]["wake"]["previous_status"], "stopped");
    back.stop(5_000);
}

#[test]
fn wakes_still_queued_when_the_helper_dies_are_cancelled() {
    let d = Dispatch::new();
    let agent = d.agent("busy", "sleep 300\n");
    let svc = Service::start(&d, &agent, &["--interval-ms", "0"]);
    let running = d.ok(&["wake", &svc.id]);
    eventually(10, "the first wake runs", || {
        d.status(&running) == "running"
    });
    let queued = d.ok(&["wake", &svc.id]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(svc.helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the helper");
    eventually(5, "helper gone", || !alive(svc.helper));
    assert_eq!(d.status(&svc.id), "stopped");
    let q = d.inspect(&queued);
    assert_eq!(q["status"], "cancelled", "{q:#}");
    assert!(
        q["state"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ended before this wake ran")),
        "{q:#}"
    );
    assert_eq!(
        d.status(&running),
        "running",
        "its own helper still owns it"
    );
    d.ok(&["stop", &running, "-t", "0"]);
}

#[test]
fn overlap_skip_drops_a_wake_that_arrives_while_one_runs() {
    let d = Dispatch::new();
    let agent = d.agent("skipper", "sleep 2\n");
    let svc = Service::start(&d, &agent, &["--interval-ms", "0", "--overlap", "skip"]);
    let first = d.ok(&["wake", &svc.id]);
    let err = d.fails(&["wake", &svc.id], 125);
    assert!(err.contains("overlap: skip"), "{err}");
    assert_eq!(svc.heartbeats().len(), 1, "the second wake made no run");
    let events = &d.inspect(&svc.id)["events"];
    let skipped = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "wake_skipped")
        .count();
    assert_eq!(skipped, 1, "{events:#}");
    assert_eq!(d.wait_terminal(&first)["status"], "succeeded");
    let again = d.ok(&["wake", &svc.id]);
    assert_ne!(again, first, "idle again: the next wake runs");
    svc.stop(5_000);
}
