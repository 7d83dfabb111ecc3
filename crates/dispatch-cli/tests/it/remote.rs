//! `--host` / `DISPATCH_HOST`: the CLI talks to a real `dispatch server`
//! process (SQLite, in-process workers) on an ephemeral port, from a directory
//! with no local state, with the same output as locally.

use crate::remote_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use dispatch_test_support::http;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use remote_common::{Client, Server};
use serde_json::json;

#[test]
fn run_ps_logs_wait_inspect_and_stop_work_against_a_server() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo \"hello $(cat)\"\n");

    let out = client.run(&["run", &hello, "--job", "{\"name\":\"ada\"}"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello {\"name\":\"ada\"}"),
        "the log streams: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("succeeded"), "a summary: {stderr}");
    assert!(
        !client.dir.path().join(".dispatch/dispatch.db").exists(),
        "nothing was stored locally"
    );

    let id = client.ok(&["run", "-d", &hello]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    assert!(client.ok(&["logs", &id[..12]]).contains("hello"));
    let ids = client.ok(&["ps", "-a", "-q"]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    assert!(
        ids.lines().next().is_some_and(|first| first == id),
        "newest first"
    );
    let table = client.ok(&["ps", "-a"]);
    assert!(
        table.contains("RUN ID") && table.contains("hello"),
        "{table}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&client.ok(&["inspect-run", &id, "--format", "json"])).expect("JSON");
    assert_eq!(doc[0]["status"], "succeeded");
    assert!(doc[0]["events"].as_array().is_some_and(|e| e.len() >= 4));
    assert_eq!(doc[0]["attempts"].as_array().map(Vec::len), Some(1));

    let failing = client.agent("failing", "exit 3\n");
    assert_eq!(client.run(&["run", &failing]).status.code(), Some(3));

    let sleeper = client.agent("sleeper", "sleep 30\n");
    let id = client.ok(&["run", "-d", &sleeper]);
    let stopped = client.ok(&["stop", &id]);
    assert_eq!(stopped, id);
    let doc: serde_json::Value =
        serde_json::from_str(&client.ok(&["inspect-run", &id, "--format", "json"])).expect("JSON");
    assert_eq!(doc[0]["status"], "cancelled");

    let out = client.run(&["logs", "ffffffffffff"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run matches"));
    assert_eq!(client.ok(&["rm", &id]), id, "rm works through the server");
    let out = client.run(&["wake", &id]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "only cluster services take wakes"
    );
}

#[test]
fn ps_filters_by_label_and_creation_time_against_a_server() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hi\n");
    let plain = client.ok(&["run", "-d", &hello]);
    assert_eq!(client.ok(&["wait", &plain]), "0");
    // No worker of this server has labels: these runs stay queued.
    let mut labelled = Vec::new();
    for labels in [json!(["gpu"]), json!(["gpu", "eu"])] {
        let (status, run) = server.call(
            "POST",
            "/v1/runs",
            Some(&json!({"parcel": "hello", "labels": labels})),
        );
        assert_eq!(status, 201, "{run}");
        labelled.push(run["id"].as_str().expect("an id").to_string());
    }
    let (gpu, both) = (&labelled[0], &labelled[1]);
    assert_eq!(client.inspect(both)["labels"], json!(["gpu", "eu"]));
    let ps = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "-q"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        client.ok(&args)
    };
    assert_eq!(ps(&["label=gpu"]), format!("{both}\n{gpu}"));
    assert_eq!(ps(&["label=gpu", "label=eu"]), *both, "every label");
    assert_eq!(
        client.ok(&["ps", "-q", "--filter", "label=eu"]),
        *both,
        "live runs by default"
    );
    let at = client.inspect(both)["created_at"]
        .as_i64()
        .expect("created_at");
    // The same instant with an offset: its + must reach the server whole.
    let shifted = dispatch_core::time::format_rfc3339(at + 3_600_000)
        .expect("a time")
        .replace('Z', "+01:00");
    assert_eq!(ps(&[&format!("since={shifted}")]), *both);
    assert_eq!(
        ps(&[&format!("until={shifted}")]),
        format!("{gpu}\n{plain}")
    );
    assert_eq!(ps(&["since=1h"]).lines().count(), 3, "an age");
    assert_eq!(ps(&["until=1h"]), "");
    let err = client.fails(&["ps", "--filter", "since=yesterday"], 125);
    assert!(err.contains("RFC 3339"), "checked before asking: {err}");
}

/// `run --host` as a flag (not in the environment): the helper `run` forks
/// first thing declines it, and the run goes to the server, even from a
/// directory whose local database exists.
#[test]
fn run_with_the_host_flag_goes_to_the_server() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hi\n");
    let local = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(args)
            .env_remove("DISPATCH_HOST")
            .env("DISPATCH_ROOT", client.dir.path().join(".dispatch"))
            .stdin(Stdio::null())
            .output()
            .expect("dispatch runs")
    };
    let ids = |out: Output| String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mine = ids(local(&["run", "-d", &hello]));
    assert_eq!(ids(local(&["wait", &mine])), "0", "a local run first");

    let out = local(&["run", "--host", &client.host, "-d", &hello]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(client.ok(&["wait", &ids(out)]), "0", "the server ran it");
    assert_eq!(
        ids(local(&["ps", "-a", "-q"])),
        mine,
        "nothing more ran locally"
    );
    let out = local(&["--host", &client.host, "run", &hello]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hi"),
        "the foreground run streams from the server: {out:?}"
    );
}

#[test]
fn an_unreachable_server_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["ps", "--host", "127.0.0.1:1"])
        .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
        .output()
        .expect("dispatch runs");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the dispatch server"),
        "{stderr}"
    );
}

#[test]
fn a_server_requiring_tokens_accepts_only_live_ones() {
    let server = Server::start(&["--require-auth"]);
    let client = Client::new(&server);
    let out = client.run(&["ps"]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a token"), "{stderr}");

    // Tokens live in the server's database.
    let admin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(args)
            .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
            .env_remove("DISPATCH_HOST")
            .output()
            .expect("dispatch token")
    };
    let created = admin(&["token", "create", "--name", "ci"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("dsp_"), "{token}");
    let listed = String::from_utf8_lossy(&admin(&["token", "ls"]).stdout).to_string();
    assert!(
        listed.contains("ci") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&token), "the secret is never shown again");

    let out = client.run_with(&["ps", "-a"], Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client.run_with(&["ps"], Some("dsp_nope_nope"));
    assert_eq!(out.status.code(), Some(125));

    let id = token.split('_').nth(1).expect("an id");
    assert!(admin(&["token", "revoke", id]).status.success());
    let out = client.run_with(&["ps"], Some(&token));
    assert_eq!(out.status.code(), Some(125), "a revoked token is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    let unknown = admin(&["token", "revoke", "nope"]);
    assert_eq!(unknown.status.code(), Some(125));
    let e = String::from_utf8_lossy(&unknown.stderr);
    assert!(e.contains("no token `nope`") && !e.contains("run"), "{e}");
}

#[test]
fn ctrl_c_on_a_remote_foreground_run_stops_the_run() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let sleeper = client.agent("sleeper", "echo up\nsleep 30\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["run", &sleeper])
        .env("DISPATCH_HOST", &client.host)
        .env("DISPATCH_ROOT", client.dir.path().join(".dispatch"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dispatch run");
    // Its first log line means the agent is up.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("the log streams").expect("a line");
        if line == "up" {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("the client exits");
    assert!(
        !status.success(),
        "a stopped run is not a success: {status:?}"
    );
    let id = client.ok(&["ps", "-a", "-q"]);
    let doc: serde_json::Value =
        serde_json::from_str(&client.ok(&["inspect-run", &id, "--format", "json"])).expect("JSON");
    assert_eq!(doc[0]["status"], "cancelled");
}

#[test]
fn a_remote_run_keeps_the_executable_bit_and_the_local_digest() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let dir = client.dir.path().join("exec");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        "FROM process\nNAME exec\nCOPY agent.sh\nCOMMAND [\"./agent.sh\"]\n",
    )
    .expect("Agentfile");
    std::fs::write(dir.join("agent.sh"), "#!/bin/sh\necho ran as a program\n").expect("agent");
    let mut perms = std::fs::metadata(dir.join("agent.sh"))
        .expect("meta")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.join("agent.sh"), perms).expect("chmod");
    let local = tempfile::tempdir().expect("local");
    let built = dispatch_core::parcel::build(&dir, local.path()).expect("builds locally");
    let out = client.run(&["run", dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ran as a program"));
    let (_, parcels) = server.call("GET", "/v1/parcels", None);
    let digests: Vec<&str> = parcels["parcels"]
        .as_array()
        .expect("parcels")
        .iter()
        .filter_map(|p| p["digest"].as_str())
        .collect();
    assert_eq!(
        digests,
        vec![built.digest.as_str()],
        "the same parcel as a local build"
    );
}

#[test]
fn logs_attempt_shows_one_attempt_s_section_against_a_server() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let agent = client.agent_with(
        "twice",
        "if [ \"$DISPATCH_ATTEMPT\" = 1 ]; then echo first try; exit 1; fi\necho second try\n",
        "RETRY 2 BACKOFF 10ms..10ms\n",
    );
    let id = client.ok(&["run", "-d", &agent]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    let first = client.ok(&["logs", &id, "--attempt", "1"]);
    assert!(
        first.contains("first try") && !first.contains("second try"),
        "{first}"
    );
    let second = client.ok(&["logs", &id, "--attempt", "2"]);
    assert!(
        second.contains("second try") && !second.contains("first try"),
        "{second}"
    );
    let e = client.fails(&["logs", &id, "--attempt", "3"], 125);
    assert!(e.contains("has no attempt 3"), "{e}");
}

/// `dispatch_http_requests_total` of the server.
fn requests(server: &Server) -> u64 {
    let text = http::get(&format!("http://{}/metrics", server.host))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("dispatch_http_requests_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the counter")
}

#[test]
fn a_remote_wait_long_polls_instead_of_asking_in_a_loop() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let slow = client.agent("slow", "sleep 2\necho done\n");
    let id = client.ok(&["run", "-d", &slow]);
    let before = requests(&server);
    assert_eq!(client.ok(&["wait", &id]), "0");
    let used = requests(&server) - before;
    // The id's lookup, one long poll, and the second /metrics itself (a
    // loop at 20 requests a second would have made about 40).
    assert!(used <= 4, "{used} requests for one wait");
}
