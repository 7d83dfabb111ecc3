//! A worker under load, with real `dispatch server` and `dispatch worker`
//! processes on PostgreSQL:
//!
//! - its leases are renewed on a thread of their own, so a runtime its runs
//!   starve (`DISPATCH_TEST_STALL`: each run blocks it for longer than the
//!   self-fencing deadline) loses none of them;
//! - admission control: a worker whose runtime is behind claims nothing
//!   more, and the runs queued meanwhile go to another worker;
//! - a worker stopped with SIGTERM leaves no workspace mounted;
//! - a frozen worker's native tool dies before the lease expires;
//! - a worker under a small file limit claims only the runs its
//!   descriptors serve.

use crate::native_common;
use crate::remote_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use dispatch_test_support::eventually;
use native_common::{Mock, native_agent};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use remote_common::{Client, Server, mounts, postgres};
use serde_json::{Value, json};

/// A `dispatch worker` process with its own directory, its stderr in a
/// file; killed (and its mounts undone) when dropped.
struct WorkerProc {
    child: Child,
    dir: tempfile::TempDir,
}

impl WorkerProc {
    fn start(db_url: &str, name: &str, args: &[&str], vars: &[(&str, &str)]) -> WorkerProc {
        WorkerProc::start_with(db_url, name, args, vars, None)
    }

    /// With `nofile` as its file limit, soft and hard, when given.
    fn start_with(
        db_url: &str,
        name: &str,
        args: &[&str],
        vars: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> WorkerProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("worker.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatch"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit(2) only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .env("DISPATCH_SANDBOX", "off")
            // Small parcels get copies by default: this test is about mounts.
            .env("DISPATCH_WORKSPACE", "overlay")
            .envs(vars.iter().copied())
            .args(["worker", "--database-url", db_url, "--name", name])
            .args(args)
            .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
            .env_remove("DISPATCH_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the worker starts");
        WorkerProc { child, dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join(".dispatch")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to exit.
    fn terminate(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        eventually(120, "the worker to exit", || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        mounts::unmount_under(self.dir.path());
    }
}

fn wait_status(client: &Client, id: &str, want: &str) -> Value {
    let mut doc = Value::Null;
    eventually(180, &format!("run {id} to be {want}"), || {
        doc = client.inspect(id);
        doc["status"] == want
    });
    doc
}

fn attempts(doc: &Value) -> Vec<Value> {
    doc["attempts"].as_array().cloned().unwrap_or_default()
}

/// The mount points under `dir` (this process's mount table).
fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

#[test]
fn a_worker_whose_runtime_is_starved_keeps_its_leases() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    // The run blocks the worker's only runtime thread 5 s as it starts:
    // far past the self-fencing deadline of a 3 s lease (SIGTERM at 2 s
    // without a renewal), had renewals waited for that thread. (One run:
    // a second one's block could fall while the first one's write holds
    // its row locked, which a renewal of that row must wait for.)
    let mut worker = WorkerProc::start(
        db.url(),
        "starved",
        &["--slots", "4", "--lease-ms", "3000"],
        &[("DISPATCH_TEST_STALL", "5000")],
    );
    let agent = client.agent("quick", "echo done");
    let ids = [client.ok(&["run", &agent, "-d"])];
    for id in &ids {
        let doc = wait_status(&client, id, "succeeded");
        let tries = attempts(&doc);
        assert_eq!(
            tries.len(),
            1,
            "one attempt, never lost: {doc:#}\n{}",
            worker.log()
        );
        assert_eq!(tries[0]["worker"], "starved", "{doc:#}");
        assert_eq!(doc["attempt"], 1, "{doc:#}");
    }
    worker.terminate();
    let log = worker.log();
    assert!(
        log.contains("1 claimed, 1 finished, 0 released to the queue, 0 lost"),
        "{log}"
    );
    assert!(!log.contains("lease not renewed"), "{log}");
    assert!(!log.contains("lease lost"), "{log}");
}

#[test]
fn a_worker_whose_runtime_is_behind_leaves_queued_runs_to_other_workers() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    // Its run keeps the runtime busy in 300 ms blocks, yielding in between:
    // the worker's loop still turns, but its runtime is always ~300 ms
    // behind, over its --max-lag-ms.
    let busy = WorkerProc::start(
        db.url(),
        "busy",
        &["--slots", "8", "--max-lag-ms", "100"],
        &[("DISPATCH_TEST_STALL", "300x100000")],
    );
    let sleeper = client.agent("sleeper", "sleep 120");
    let first = client.ok(&["run", &sleeper, "-d"]);
    eventually(60, "the busy worker to claim the first run", || {
        client.inspect(&first)["status"] != "queued"
    });
    let quick = client.agent("quick", "echo done");
    let ids: Vec<String> = (0..3).map(|_| client.ok(&["run", &quick, "-d"])).collect();
    eventually(60, "the busy worker to hold its claims back", || {
        busy.log().contains("claiming no more")
    });
    let _other = WorkerProc::start(db.url(), "other", &["--slots", "8"], &[]);
    for id in &ids {
        let doc = wait_status(&client, id, "succeeded");
        let tries = attempts(&doc);
        assert_eq!(tries.len(), 1, "{doc:#}");
        assert_eq!(tries[0]["worker"], "other", "{doc:#}");
    }
    let log = busy.log();
    assert!(log.contains("with 1 run(s) in hand"), "{log}");
}

#[test]
fn a_worker_stopped_with_sigterm_leaves_no_workspace_mounted() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let mut worker = WorkerProc::start(
        db.url(),
        "draining",
        &["--slots", "2", "--grace-period-ms", "200"],
        &[],
    );
    let sleeper = client.agent("sleeper", "sleep 120");
    let ids: Vec<String> = (0..2)
        .map(|_| client.ok(&["run", &sleeper, "-d"]))
        .collect();
    for id in &ids {
        wait_status(&client, id, "running");
    }
    let root = worker.root();
    let works: Vec<PathBuf> = ids
        .iter()
        .map(|id| root.join("runs").join(id).join("work"))
        .collect();
    eventually(30, "the workspaces in place", || {
        works.iter().all(|w| w.is_dir())
    });
    if mounted_under(&root).is_empty() {
        eprintln!("note: no overlay workspace here (not root): nothing is left mounted to check");
        return;
    }
    assert_eq!(mounted_under(&root).len(), 2, "one overlay per run");
    worker.terminate();
    assert_eq!(
        mounted_under(&root),
        Vec::<PathBuf>::new(),
        "the stopped worker left mounts: {}",
        worker.log()
    );
    for (id, work) in ids.iter().zip(&works) {
        let doc = client.inspect(id);
        assert_eq!(doc["status"], "queued", "released to the queue: {doc:#}");
        assert!(!work.exists(), "its workspace is gone: {}", work.display());
    }
    let log = worker.log();
    assert!(log.contains("2 released to the queue"), "{log}");
}

/// A worker under a small file limit (200 descriptors, soft and hard)
/// counts its descriptors from a few runs in hand and claims only what
/// they serve: 100 native runs queued for its 100 slots all succeed, none
/// for want of a descriptor, and its log says it held back. (It counted
/// from 512 runs in hand whatever its limit, so under this one it took
/// every run and its model calls failed with "Too many open files":
/// issue #38.)
#[test]
fn a_worker_under_a_small_file_limit_claims_only_what_its_descriptors_serve() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let mock = Mock::with_script(json!({
        "steps": [],
        "fallback": {"kind": "rounds", "tool_rounds": 0, "tool_name": "none", "delay_ms": 1500, "text": "done"},
    }));
    let dir = native_agent(
        client.dir.path(),
        "waiter",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let agent = dir.to_str().expect("utf-8");
    // All queued before the worker starts: it finds 100 at once.
    let ids: Vec<String> = (0..100).map(|_| client.ok(&["run", agent, "-d"])).collect();
    let mut worker = WorkerProc::start_with(
        db.url(),
        "small",
        &["--slots", "100"],
        &[("DISPATCH_SANDBOX", "on")],
        Some(200),
    );
    let count = |status: &str| {
        let (_, body) = server.call("GET", &format!("/v1/runs?status={status}&limit=200"), None);
        let runs = body.get("runs").unwrap_or(&body);
        runs.as_array().map_or(0, Vec::len)
    };
    eventually(120, "every run to end", || {
        count("queued,starting,running") == 0
    });
    assert_eq!(count("succeeded"), ids.len(), "{}", worker.log());
    worker.terminate();
    let log = worker.log();
    assert!(
        log.contains("too few file descriptors left for more"),
        "{log}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("100 finished"), "{log}");
}

/// A worker frozen (SIGSTOP) while a native run's LOCAL tool runs: the
/// tool is killed before the run's lease expires, though its tether was
/// made when the tool started, after the lease had been renewed (the
/// tether takes the run's latest deadline, and renewals move it).
#[test]
fn a_frozen_workers_native_tool_is_killed_before_the_lease_expires() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return; // the tether comes with the sandbox's PID namespace (root here)
    }
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    // The first answer, a call of the tool, comes after 3 s: renewals first.
    let mock = Mock::with_script(json!({
        "steps": [],
        "fallback": {"kind": "rounds", "tool_rounds": 1, "tool_name": "beat", "delay_ms": 3000, "text": "done"},
    }));
    let dir = native_agent(
        client.dir.path(),
        "beater",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL beat.sh AS beat",
            mock.url()
        ),
    );
    std::fs::write(
        dir.join("beat.sh"),
        "while :; do date +%s%N >> tool-beats; sleep 0.02; done\n",
    )
    .expect("tool");
    let worker = WorkerProc::start(
        db.url(),
        "frozen",
        &["--slots", "2", "--lease-ms", "3000"],
        &[("DISPATCH_SANDBOX", "on")],
    );
    let id = client.ok(&["run", dir.to_str().expect("utf-8"), "-d"]);
    let beats = worker.root().join("runs").join(&id).join("work/tool-beats");
    eventually(60, "the tool beats", || {
        std::fs::metadata(&beats).is_ok_and(|m| m.len() > 0)
    });
    let frozen = std::time::SystemTime::now();
    kill(Pid::from_raw(worker.child.id() as i32), Signal::SIGSTOP).expect("SIGSTOP");
    eventually(20, "the beats stop", || {
        let before = std::fs::metadata(&beats).map_or(0, |m| m.len());
        std::thread::sleep(std::time::Duration::from_millis(500));
        before == std::fs::metadata(&beats).map_or(0, |m| m.len())
    });
    let text = std::fs::read_to_string(&beats).expect("beats");
    let last: u128 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("a beat");
    let frozen_ns = frozen
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    assert!(
        last < frozen_ns + 3_000_000_000,
        "the tool beat {} ms after the freeze, past the 3 s lease",
        (last - frozen_ns) / 1_000_000
    );
    let _ = kill(Pid::from_raw(worker.child.id() as i32), Signal::SIGCONT);
}
