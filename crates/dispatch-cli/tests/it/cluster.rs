//! `dispatch worker` as a real process on PostgreSQL: a killed worker's run is
//! taken over after its lease expires as attempt 2, the lost one recorded
//! with its reason and not counted against the retry budget, and
//! SIGTERM drains (finish within the grace period, else back to the queue).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::{AttemptStore, EventStore, PgStore, Run, RunStore};
use dispatch_test_support::testdb::TestDatabase;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

struct Cluster {
    dir: tempfile::TempDir,
    db: TestDatabase,
    store: PgStore,
}

impl Cluster {
    /// A fresh database and state directory with a parcel whose agent runs `script`.
    fn new(script: &str) -> Option<Cluster> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("agent");
        std::fs::create_dir_all(&src).expect("agent dir");
        std::fs::write(
            src.join("Agentfile"),
            "FROM process\nNAME sleeper\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        )
        .expect("Agentfile");
        std::fs::write(src.join("agent.sh"), script).expect("agent.sh");
        let layout = Layout::new(dir.path().join(".dispatch"));
        dispatch_core::parcel::build(&src, &layout.parcels()).expect("the parcel builds");
        let (db, store) = block_on(async {
            let db = TestDatabase::create().await?;
            let store = PgStore::connect(db.url(), 2).await.expect("connects");
            Some((db, store))
        })?;
        Some(Cluster { dir, db, store })
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path().join(".dispatch"))
    }

    fn create_run(&self) -> RunId {
        let request = LaunchRequest {
            source: "sleeper".into(),
            operation: None,
            payload: json!({}),
            parent_id: None,
            origin_id: None,
            project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
        };
        block_on(launch::create(&self.store, &self.layout(), &request))
            .expect("a run is created")
            .0
            .id
    }

    fn worker(&self, name: &str, lease_ms: u64, grace_ms: u64) -> Child {
        Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args([
                "worker",
                "--database-url",
                self.db.url(),
                "--slots",
                "2",
                "--name",
                name,
            ])
            .args(["--lease-ms", &lease_ms.to_string()])
            .args(["--grace-period-ms", &grace_ms.to_string()])
            .env("DISPATCH_ROOT", self.layout().root())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts")
    }

    fn run(&self, id: &RunId) -> Run {
        block_on(self.store.get_run(id)).expect("the run reads")
    }

    /// Polls the run until `done` holds (deadline 30 s).
    fn wait_for(&self, id: &RunId, what: &str, done: impl Fn(&Run) -> bool) -> Run {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.run(id);
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {run:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits for `child` to exit (deadline 30 s); returns whether it succeeded.
fn exited(child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.success();
        }
        assert!(Instant::now() < deadline, "the worker did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal the worker");
}

fn group_alive(pgid: u32) -> bool {
    killpg(Pid::from_raw(pgid as i32), None).is_ok()
}

fn running(run: &Run) -> bool {
    run.status() == Status::Running
}

#[test]
fn a_killed_workers_run_is_taken_over_as_attempt_2_with_the_reason() {
    let Some(cluster) = Cluster::new("sleep 1\necho finished\n") else {
        return;
    };
    let id = cluster.create_run();
    let mut first = cluster.worker("first", 1000, 5000);
    let run = cluster.wait_for(&id, "the first worker to start it", running);
    signal(&first, Signal::SIGKILL);
    let _ = first.wait();
    // The machine is gone: so is its agent.
    if let Some(agent) = run.state.agent() {
        let _ = killpg(Pid::from_raw(agent.pid as i32), Signal::SIGKILL);
    }
    let mut second = cluster.worker("second", 1000, 5000);
    let done = cluster.wait_for(&id, "the second worker to finish it", |r| {
        r.state.is_terminal()
    });
    assert_eq!(done.status(), Status::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 2, "the second execution is attempt 2");
    let attempts = block_on(cluster.store.list_attempts(&id)).expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let lost = &attempts[0];
    assert_eq!(lost.worker.as_deref(), Some("first"), "{attempts:?}");
    assert_eq!(lost.status, Some(Status::Failed), "{attempts:?}");
    let reason = lost.error.as_deref().unwrap_or_default();
    assert!(
        reason.contains("lease expired") && reason.contains("does not count"),
        "{reason}"
    );
    assert_eq!(attempts[1].worker.as_deref(), Some("second"));
    assert_eq!(attempts[1].status, Some(Status::Succeeded));
    let log = std::fs::read_to_string(cluster.layout().log(&id)).unwrap_or_default();
    // The lost attempt does not count against the retry budget.
    assert!(log.contains("attempt 2 (counts as 1 of"), "{log}");
    let events = block_on(cluster.store.list_events(&id, 0, usize::MAX)).expect("events");
    let expired = events
        .iter()
        .find(|e| e.event.data["reason"] == "lease expired")
        .expect("the takeover is recorded");
    assert_eq!(expired.event.data["worker"], "first");
    let claims: Vec<_> = events
        .iter()
        .filter(|e| e.event.data["to"] == "starting")
        .map(|e| e.event.data["worker"].clone())
        .collect();
    assert_eq!(claims, vec![json!("first"), json!("second")]);
    signal(&second, Signal::SIGTERM);
    assert!(exited(&mut second), "the second worker drains and exits 0");
}

#[test]
fn sigterm_lets_a_run_finish_within_the_grace_period() {
    let Some(cluster) = Cluster::new("sleep 1\necho finished\n") else {
        return;
    };
    let id = cluster.create_run();
    let mut worker = cluster.worker("drainer", 10_000, 20_000);
    cluster.wait_for(&id, "the worker to start it", running);
    signal(&worker, Signal::SIGTERM);
    assert!(exited(&mut worker), "the worker exits 0 after draining");
    let run = cluster.run(&id);
    assert_eq!(
        run.status(),
        Status::Succeeded,
        "finished during the drain: {run:?}"
    );
    let log = std::fs::read_to_string(cluster.layout().log(&id)).unwrap_or_default();
    assert!(log.contains("finished"), "{log}");
}

#[test]
fn sigterm_past_the_grace_period_returns_the_run_to_the_queue() {
    let Some(cluster) = Cluster::new("sleep 60\n") else {
        return;
    };
    let id = cluster.create_run();
    let mut worker = cluster.worker("impatient", 10_000, 300);
    let run = cluster.wait_for(&id, "the worker to start it", running);
    let agent = run.state.agent().expect("an agent");
    signal(&worker, Signal::SIGTERM);
    assert!(exited(&mut worker), "the worker exits 0 after releasing");
    let run = cluster.run(&id);
    assert_eq!(run.status(), Status::Queued, "back in the queue: {run:?}");
    assert_eq!(run.attempt, 2, "the next execution is the next attempt");
    let last_attempt = block_on(cluster.store.list_attempts(&id)).expect("attempts");
    let reason = last_attempt[0].error.as_deref().unwrap_or_default();
    assert!(reason.contains("worker drained"), "{reason}");
    let events = block_on(cluster.store.list_events(&id, 0, usize::MAX)).expect("events");
    let last = events.last().expect("events");
    assert_eq!(last.event.data["to"], "queued");
    assert_eq!(last.event.data["worker"], "impatient");
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_alive(agent.pid) {
        assert!(Instant::now() < deadline, "the agent was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ten_workers_starting_at_once_on_an_empty_database_all_come_up_and_work() {
    let Some(db) = block_on(TestDatabase::create()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(".dispatch");
    // Ten processes race to create the schema of an empty database.
    let mut workers: Vec<Child> = (0..10)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_dispatch"))
                .args(["worker", "--database-url", db.url(), "--slots", "1"])
                .args(["--name", &format!("w{i}")])
                .env("DISPATCH_ROOT", &root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("a worker starts")
        })
        .collect();
    let src = dir.path().join("agent");
    std::fs::create_dir_all(&src).expect("agent dir");
    std::fs::write(
        src.join("Agentfile"),
        "FROM process\nNAME quick\nCOMMAND true\n",
    )
    .expect("Agentfile");
    let layout = Layout::new(root.clone());
    dispatch_core::parcel::build(&src, &layout.parcels()).expect("the parcel builds");
    let store = block_on(PgStore::connect(db.url(), 2)).expect("connects");
    let ids: Vec<RunId> = (0..10)
        .map(|_| {
            let request = LaunchRequest {
                source: "quick".into(),
                operation: None,
                payload: json!({}),
                parent_id: None,
                origin_id: None,
                project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
            };
            block_on(launch::create(&store, &layout, &request))
                .expect("a run")
                .0
                .id
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let run = block_on(store.get_run(id)).expect("the run reads");
            if run.state.is_terminal() {
                assert_eq!(run.status(), Status::Succeeded, "{run:?}");
                break;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for (i, w) in workers.iter_mut().enumerate() {
        assert!(
            w.try_wait().expect("try_wait").is_none(),
            "worker w{i} exited: {:?}",
            w.try_wait()
        );
    }
    for w in &mut workers {
        signal(w, Signal::SIGTERM);
    }
    for w in &mut workers {
        assert!(exited(w), "a worker drains and exits 0");
    }
}

#[test]
fn usage_is_counted_once_per_execution_when_a_drained_run_is_claimed_again_on_the_same_machine() {
    // The first execution outlasts its worker's drain (a loaded host once
    // let a one-second agent finish before the SIGTERM); the second ends.
    let Some(cluster) = Cluster::new(
        "echo '{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":100,\"output_tokens\":20}' >> \"$DISPATCH_EVENTS\"\n[ \"$DISPATCH_ATTEMPT\" = 1 ] && sleep 60\necho done\n",
    ) else {
        return;
    };
    let id = cluster.create_run();
    let mut first = cluster.worker("drained", 10_000, 200);
    cluster.wait_for(&id, "the first execution's usage", |r| {
        r.usage.input_tokens == 100
    });
    signal(&first, Signal::SIGTERM);
    assert!(exited(&mut first), "the worker drains and exits 0");
    let mut second = cluster.worker("again", 10_000, 5000);
    let done = cluster.wait_for(&id, "the second execution", |r| r.state.is_terminal());
    assert_eq!(done.status(), Status::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 2);
    // Two executions, each 100 in / 20 out: the first's events are not read again.
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (200, 40),
        "{done:?}"
    );
    signal(&second, Signal::SIGTERM);
    assert!(exited(&mut second));
}
