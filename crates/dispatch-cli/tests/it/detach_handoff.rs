//! `dispatch run --detach` hands the run to a helper that shares its
//! memory and prints for it (`prefork::shared_vm`): what the caller sees is
//! what it saw when the helper was a fork, and the caller's pipes are never
//! held by the run.

use crate::common;

use common::{Dispatch, alive, eventually};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `dispatch run <agent> --detach` started, its stdout and stderr `stdio()`.
fn caller(
    d: &Dispatch,
    agent: &std::path::Path,
    stdio: fn() -> std::process::Stdio,
) -> std::process::Child {
    d.command()
        .args(["run", path(agent), "--detach"])
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .expect("run dispatch")
}

#[test]
fn a_detached_run_answers_with_its_id_alone_while_its_agent_runs_on() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent(
        "gated",
        &format!(
            "i=0; while [ ! -e {} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n",
            gate.display()
        ),
    );
    let args = ["run", path(&agent), "--detach"];
    // `output` reads stdout and stderr to their end: it returns only once no
    // process holds them, so the run (which is still waiting) holds neither.
    let out = d.run(&args);
    let id = common::checks::ok(&args, &out);
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "stdout is the run id alone: {id:?}"
    );
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, "its agent starts (it waits for the gate)", || {
        d.status(&id) == "running"
    });
    let helper = d.helper_pid(&id);
    assert!(alive(helper), "the helper runs on after `dispatch` exited");
    std::fs::write(&gate, b"").expect("open the gate");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    eventually(10, "the helper exits with its run", || !alive(helper));
}

#[test]
fn a_detached_run_that_cannot_be_created_says_why_on_the_callers_stderr() {
    let d = Dispatch::new();
    let missing = d.dir.path().join("missing");
    let args = ["run", path(&missing), "--detach"];
    let out = d.run(&args);
    let stderr = common::checks::fails(&args, &out, 125);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(out.stdout.is_empty(), "no id on stdout");
    let listed = d.ok(&["ps", "-a", "-q"]);
    assert!(listed.is_empty(), "no run was created: {listed}");
}

#[test]
fn a_detached_runs_usage_error_is_printed_as_any_command_s() {
    let d = Dispatch::new();
    let stderr = d.fails(&["run", "-d"], 2);
    assert!(stderr.contains("<SOURCE>"), "{stderr}");
    let help = d.ok(&["run", "-d", "--help"]);
    assert!(help.contains("Usage: dispatch run"), "{help}");
}

#[test]
fn a_deduplicated_detached_run_says_so_and_prints_the_first_runs_id() {
    let d = Dispatch::new();
    let agent = d.agent("once", "true\n");
    let args = ["run", path(&agent), "--detach", "--idempotency-key", "k1"];
    let first = d.ok(&args);
    let out = d.run(&args);
    let again = common::checks::ok(&args, &out);
    assert_eq!(again, first, "the run that exists");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not dispatching again"), "{stderr}");
}

#[test]
fn a_detached_run_for_a_server_is_declined_by_the_helper_and_sent_there() {
    let d = Dispatch::new();
    let agent = d.agent("remote", "true\n");
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let host = format!("http://127.0.0.1:{port}");
    let stderr = d.fails(&["--host", &host, "run", path(&agent), "-d"], 125);
    assert!(
        stderr.contains("cannot reach the dispatch server"),
        "{stderr}"
    );
    let listed = d.ok(&["ps", "-a", "-q"]);
    assert!(listed.is_empty(), "nothing was run here: {listed}");
}

#[test]
fn a_detached_run_whose_caller_stopped_reading_still_runs() {
    let d = Dispatch::new();
    let agent = d.agent("unread", "true\n");
    // Its stdout is a pipe nobody reads any more: printing the id fails.
    let (read, write) = nix::unistd::pipe().expect("a pipe");
    drop(read);
    let status = d
        .command()
        .args(["run", path(&agent), "--detach", "--idempotency-key", "u1"])
        .stdout(std::process::Stdio::from(write))
        .status()
        .expect("run dispatch");
    assert!(status.success(), "the id is lost, not the run: {status:?}");
    eventually(10, "the run ran to its end", || {
        d.ok(&["ps", "-a", "--filter", "status=succeeded", "-q"])
            .lines()
            .count()
            == 1
    });
}

/// `dispatch run --detach` killed at any moment of its handoff: the helper
/// holds the memory they share, so a run that was created runs to its end,
/// and none is left stuck.
#[test]
fn a_detached_run_whose_caller_is_killed_mid_handoff_is_never_left_stuck() {
    let d = Dispatch::new();
    let agent = d.agent("killed", "true\n");
    for delay_us in [0u64, 200, 500, 1000, 2000, 3000, 5000, 8000] {
        let mut cli = caller(&d, &agent, std::process::Stdio::null);
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        let _ = cli.kill();
        let _ = cli.wait();
    }
    let ids = d.ok(&["ps", "-a", "-q"]);
    for id in ids.lines() {
        let doc = d.wait_terminal(id);
        assert_eq!(doc["status"], "succeeded", "run {id}: {doc:#}");
    }
}

/// Callers stopped (`SIGSTOP`) at moments around their handoff: no run
/// waits for its stopped caller, and once continued every caller exits
/// with its own run's id.
#[test]
fn detached_runs_whose_callers_are_stopped_go_on_and_the_callers_answer_when_continued() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let d = Dispatch::new();
    let agent = d.agent("stopped", "true\n");
    let mut callers = Vec::new();
    for delay_us in [0u64, 500, 1000, 2000, 3000, 5000] {
        let cli = caller(&d, &agent, std::process::Stdio::piped);
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        // It may have answered already: then there is nothing to stop.
        let _ = kill(Pid::from_raw(cli.id() as i32), Signal::SIGSTOP);
        callers.push(cli);
    }
    eventually(10, "every run made so far ends, its caller stopped", || {
        let all = d.ok(&["ps", "-a", "-q"]).lines().count();
        let done = d
            .ok(&["ps", "-a", "--filter", "status=succeeded", "-q"])
            .lines()
            .count();
        done == all
    });
    let mut ids = Vec::new();
    for cli in callers {
        let _ = kill(Pid::from_raw(cli.id() as i32), Signal::SIGCONT);
        let out = cli.wait_with_output().expect("the caller exits");
        ids.push(common::checks::ok(&["run", "--detach"], &out));
    }
    for id in &ids {
        let doc = d.wait_terminal(id);
        assert_eq!(doc["status"], "succeeded", "run {id}: {doc:#}");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "one run for each caller: {ids:?}");
}
