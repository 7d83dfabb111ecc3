//! A worker's name is unique among live workers: a second `dispatch worker`
//! of a live one's name is refused, naming the first's host and pid, while
//! a restart after a crash on the same machine takes the name at once.

use crate::remote_common;

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

/// A worker frozen longer than a silent worker keeps its name (SIGSTOP, a
/// VM stall) finds, when it thaws, that another live worker took it: it
/// claims nothing more, drains and exits non-zero saying why, and leaves
/// the name's record to the other.
#[test]
fn a_worker_that_thaws_to_find_its_name_taken_drains_and_stops() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("first.log");
    let mut first = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db.url(), "--name", "twin"])
        .env("DISPATCH_SANDBOX", "off")
        .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("the first worker starts");
    listed_with_pid(&server, "twin", first.id());
    let pid = nix::unistd::Pid::from_raw(first.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");

    // Silent past SILENT_AFTER (15 s): a second worker may take the name.
    let frozen_at = Instant::now();
    let second = loop {
        std::thread::sleep(Duration::from_secs(1));
        let mut probe = Worker::start(db.url(), "twin", &["--slots", "1"]);
        // Refused (it exits) or taken (the server lists its pid).
        let taken = loop {
            if probe.child.try_wait().expect("status").is_some() {
                break false;
            }
            let (_, body) = server.call("GET", "/v1/workers", None);
            let listed = body["workers"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|w| w["name"] == "twin" && w["pid"] == probe.child.id())
            });
            if listed {
                break true;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if taken {
            break probe;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(45),
            "the frozen worker's name was never freed"
        );
    };
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.try_wait().expect("status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the thawed worker went on");
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "it exited 0: {err}");
    assert!(
        err.contains("was taken by another live worker") && err.contains("--name"),
        "{err}"
    );
    // The name is still the second's, working.
    let listed = listed_with_pid(&server, "twin", second.child.id());
    assert_eq!(listed["state"], "working", "{listed}");
}
