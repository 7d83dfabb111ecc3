//! Capacity-aware claiming with real `dispatch server` and `dispatch worker`
//! processes on PostgreSQL: a worker offering 256M never claims a run that
//! asks `RESOURCES MEMORY 512M` (while it does claim a run that asks
//! nothing), a bigger worker does, and a worker whose capacity holds one
//! such run at a time never runs two at once, however many slots it has.

use crate::remote_common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use remote_common::{Client, Server, postgres};
use serde_json::Value;

/// A `dispatch worker` process, stopped when dropped (test failed or not).
struct WorkerProc(Child);

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn worker(server: &Server, url: &str, name: &str, memory: &str) -> WorkerProc {
    let child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", url, "--slots", "4"])
        .args(["--name", name, "--memory", memory, "--cpus", "2"])
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts");
    WorkerProc(child)
}

fn wait_status(client: &Client, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = client.inspect(id);
        if doc["status"] == want {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not become {want}: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn only_attempt(doc: &Value) -> &Value {
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{doc:#}");
    &attempts[0]
}

#[test]
fn workers_claim_only_runs_that_fit_their_capacity_and_never_oversubscribe_it() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let big_run = client.agent_with("big", "sleep 1\n", "RESOURCES MEMORY 512M\n");
    let plain = client.agent("plain", "true\n");

    let _small = worker(&server, db.url(), "small", "256M");
    let a = client.ok(&["run", &big_run, "--detach"]);
    let b = client.ok(&["run", &plain, "--detach"]);
    // The small worker looks at the queue (it takes the run that asks
    // nothing) but leaves the 512M run where it is.
    let done = wait_status(&client, &b, "succeeded");
    assert_eq!(only_attempt(&done)["worker"], "small", "{done:#}");
    assert_eq!(client.inspect(&a)["status"], "queued");

    // A worker with room for one 512M run at a time takes both, one after
    // the other.
    let _big = worker(&server, db.url(), "big", "600M");
    let c = client.ok(&["run", &big_run, "--detach"]);
    let (da, dc) = (
        wait_status(&client, &a, "succeeded"),
        wait_status(&client, &c, "succeeded"),
    );
    let (ta, tc) = (only_attempt(&da), only_attempt(&dc));
    assert_eq!(ta["worker"], "big");
    assert_eq!(tc["worker"], "big");
    let span = |t: &Value| {
        (
            t["started_at"].as_i64().expect("started"),
            t["ended_at"].as_i64().expect("ended"),
        )
    };
    let ((a0, a1), (c0, c1)) = (span(ta), span(tc));
    assert!(
        a1 <= c0 || c1 <= a0,
        "two 512M runs overlapped on a 600M worker: {a0}..{a1} and {c0}..{c1}"
    );
}

#[test]
fn a_servers_in_process_workers_claim_only_runs_that_fit_their_capacity() {
    // The embedded database: no PostgreSQL needed.
    let server = Server::start(&["--workers", "2", "--memory", "256M", "--cpus", "1"]);
    let client = Client::new(&server);
    let big_run = client.agent_with("big", "true\n", "RESOURCES MEMORY 512M\n");
    let many_cpus = client.agent_with("cores", "true\n", "RESOURCES CPUS 2\n");
    let plain = client.agent("plain", "true\n");
    let a = client.ok(&["run", &big_run, "--detach"]);
    let c = client.ok(&["run", &many_cpus, "--detach"]);
    let b = client.ok(&["run", &plain, "--detach"]);
    // The workers took the run that fits, after the two that do not were queued.
    wait_status(&client, &b, "succeeded");
    assert_eq!(client.inspect(&a)["status"], "queued");
    assert_eq!(client.inspect(&c)["status"], "queued");
}

#[test]
fn a_server_refuses_a_capacity_that_is_not_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["server", "--listen", "127.0.0.1:0", "--memory", "lots"])
        .env("DISPATCH_ROOT", tempfile::tempdir().expect("tmp").path())
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--memory `lots` is not a size"), "{err}");
}
