//! A worker's name is unique among live workers: a second `dispatch worker`
//! of a live one's name is refused, naming the first's host and pid, while
//! a restart after a crash on the same machine takes the name at once.

mod remote_common;

use std::process::Command;
use std::time::{Duration, Instant};

use remote_common::{Server, Worker, postgres};
use serde_json::Value;

/// The worker `name` as `GET /v1/workers` lists it, once it has pid `pid`.
fn listed_with_pid(server: &Server, name: &str, pid: u32) -> Value {
    let body = server.wait_for("/v1/workers", |b| {
        b["workers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|w| w["name"] == name && w["pid"] == pid))
    });
    body["workers"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == name).cloned())
        .unwrap_or_default()
}

#[test]
fn a_second_live_worker_of_a_name_is_refused_and_a_crashed_ones_restart_is_not() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let mut first = Worker::start(db.url(), "dup", &["--slots", "1"]);
    let listed = listed_with_pid(&server, "dup", first.child.id());
    let host = listed["host"].as_str().unwrap_or_default().to_string();
    assert!(!host.is_empty(), "{listed}");

    let second = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db.url(), "--name", "dup"])
        .env("DISPATCH_SANDBOX", "off")
        .env("DISPATCH_ROOT", server.state.path().join("second"))
        .output()
        .expect("the second worker runs");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second `dup` was accepted: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("pid {} on {host}", first.child.id()))
            && err.contains("another --name"),
        "{err}"
    );
    assert_eq!(
        listed_with_pid(&server, "dup", first.child.id())["state"],
        "working",
        "the first is untouched"
    );

    // kill -9, and a supervisor starts it again at once on the same machine.
    first.child.kill().expect("kill");
    first.child.wait().expect("reaped");
    let start = Instant::now();
    let mut again = Worker::start(db.url(), "dup", &["--slots", "1"]);
    listed_with_pid(&server, "dup", again.child.id());
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "the restart waited for the dead one to go silent"
    );
    assert!(again.child.try_wait().expect("status").is_none(), "it runs");
}
