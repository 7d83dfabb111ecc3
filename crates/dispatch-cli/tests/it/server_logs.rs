//! The logs of `dispatch server` and `dispatch worker` go through `tracing`:
//! `--log-format json` writes one JSON object per line on stderr (real
//! processes, every line parsed), `text` one human line, and
//! `DISPATCH_LOG` / `RUST_LOG` choose the levels.

use crate::common;

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr, Command, Stdio};

use common::Dispatch;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// `dispatch <args>` with stderr piped, in `d`'s state directory.
fn spawn(
    d: &Dispatch,
    args: &[&str],
    vars: &[(&str, &str)],
) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = d
        .command()
        .args(args)
        .env_remove("DISPATCH_LOG")
        .env_remove("RUST_LOG")
        .env_remove("DISPATCH_LOG_FORMAT")
        .env_remove("DISPATCH_HOST")
        .env_remove("DISPATCH_DATABASE_URL")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dispatch starts");
    let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    (child, lines)
}

/// SIGTERM, then every line left until the process closes stderr.
fn stop(mut child: Child, lines: Lines<BufReader<ChildStderr>>) -> Vec<String> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let rest: Vec<String> = lines.map(|l| l.expect("a line")).collect();
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "a drained process exits 0: {status:?} {rest:#?}"
    );
    rest
}

fn json(line: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    for key in ["timestamp", "level", "message", "target"] {
        assert!(v.get(key).is_some(), "`{key}` missing: {line}");
    }
    v
}

#[test]
fn server_json_logs_are_one_parseable_object_per_line() {
    let d = Dispatch::new();
    let (child, mut lines) = spawn(
        &d,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--log-format",
            "json",
            // Nothing listens on port 1: a warning once a run finishes.
            "--otlp-endpoint",
            "http://127.0.0.1:1",
        ],
        &[],
    );
    let first = json(&lines.next().expect("a first line").expect("utf-8"));
    assert_eq!(first["level"], "INFO", "{first}");
    let message = first["message"].as_str().expect("a message");
    assert!(message.contains("listening on http://"), "{first}");
    let addr = first["addr"]
        .as_str()
        .expect("the address as a field")
        .to_string();

    // A run through the server: its trace cannot be exported, a warning.
    let client = Dispatch::new();
    let agent = client.agent("quick", "echo hi\n");
    let out = client
        .command()
        .args(["run", agent.to_str().expect("utf-8")])
        .env("DISPATCH_HOST", &addr)
        .output()
        .expect("dispatch run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let v = json(&line.expect("utf-8"));
        let warned = v["level"] == "WARN"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot export traces"));
        seen.push(v);
        if warned {
            break;
        }
    }
    let rest = stop(child, lines);
    let rest: Vec<Value> = rest.iter().map(|l| json(l)).collect();
    assert!(
        rest.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.contains("dispatch server stopped"))),
        "{rest:#?}"
    );
}

#[test]
fn worker_json_logs_are_one_parseable_object_per_line() {
    let d = Dispatch::new();
    // Make the local database first.
    d.ok(&["ps"]);
    let (child, mut lines) = spawn(&d, &["worker", "--log-format", "json", "--name", "w1"], &[]);
    let first = json(&lines.next().expect("a first line").expect("utf-8"));
    assert_eq!(first["worker"], "w1", "{first}");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("started")),
        "{first}"
    );
    let rest = stop(child, lines);
    assert!(!rest.is_empty(), "the worker says it stopped");
    for line in &rest {
        json(line);
    }
}

/// A loopback port nothing listens on (the server takes it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn dispatch_log_or_rust_log_sets_the_levels() {
    for var in ["DISPATCH_LOG", "RUST_LOG"] {
        let d = Dispatch::new();
        let addr = format!("127.0.0.1:{}", free_port());
        let (child, mut lines) = spawn(
            &d,
            &[
                "server",
                "--listen",
                &addr,
                "--workers",
                "1",
                "--log-format",
                "json",
                "--otlp-endpoint",
                "http://127.0.0.1:1",
            ],
            &[(var, "warn")],
        );
        // No info line says it listens: a run through it is the sign.
        let client = Dispatch::new();
        let agent = client.agent("quick", "echo hi\n");
        common::eventually(30, "the server answers", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        let out = client
            .command()
            .args(["run", agent.to_str().expect("utf-8")])
            .env("DISPATCH_HOST", &addr)
            .output()
            .expect("dispatch run");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        // The first line is the warning: nothing at info came before it.
        let first = json(&lines.next().expect("a line").expect("utf-8"));
        assert_eq!(first["level"], "WARN", "{var}=warn: {first}");
        let rest = stop(child, lines);
        assert!(
            rest.iter().all(|l| json(l)["level"] != "INFO"),
            "{var}=warn: {rest:#?}"
        );
    }
}

#[test]
fn text_logs_are_plain_lines_and_a_bad_filter_or_format_is_one_line() {
    let d = Dispatch::new();
    d.ok(&["ps"]);
    let (child, mut lines) = spawn(&d, &["worker", "--name", "w1"], &[]);
    let first = lines.next().expect("a first line").expect("utf-8");
    assert!(serde_json::from_str::<Value>(&first).is_err(), "{first}");
    assert!(
        first.contains("INFO") && first.contains("dispatch worker w1 started"),
        "{first}"
    );
    stop(child, lines);

    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--name", "w2"])
        .env("DISPATCH_ROOT", d.root())
        .env("DISPATCH_LOG", "info,dispatch_server=loud")
        .stdin(Stdio::null())
        .output()
        .expect("dispatch worker");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DISPATCH_LOG") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let e = d.fails(&["server", "--log-format", "yaml"], 2);
    assert!(e.contains("yaml") && e.contains("json"), "{e}");
}

/// A warning from inside a run a worker holds (a handoff it cannot announce
/// on the bus: nothing listens on port 1) is a JSON line like the rest; so
/// is every other line the server writes before and after.
#[test]
fn a_warning_from_a_run_in_a_worker_is_json_too() {
    let d = Dispatch::new();
    let billing = d.agent(
        "billing",
        "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_OUTPUT\"\n",
    );
    d.ok(&["build", billing.to_str().expect("utf-8")]);
    let (child, mut lines) = spawn(
        &d,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--log-format",
            "json",
            "--bus",
            "redis://127.0.0.1:1",
        ],
        &[],
    );
    let first = json(&lines.next().expect("a first line").expect("utf-8"));
    let addr = first["addr"].as_str().expect("the address").to_string();
    let client = Dispatch::new();
    let sender = client.agent(
        "sender",
        "echo '{\"type\":\"handoff\",\"parcel\":\"billing\",\"payload\":{\"invoice\":42}}' >> \"$DISPATCH_EVENTS\"\n",
    );
    let out = client
        .command()
        .args(["run", sender.to_str().expect("utf-8")])
        .env("DISPATCH_HOST", &addr)
        .output()
        .expect("dispatch run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut warned = false;
    for line in lines.by_ref() {
        let v = json(&line.expect("utf-8"));
        if v["level"] == "WARN"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot announce it on the bus"))
        {
            warned = true;
            break;
        }
    }
    assert!(warned, "the handoff's warning");
    for line in stop(child, lines) {
        json(&line);
    }
}
