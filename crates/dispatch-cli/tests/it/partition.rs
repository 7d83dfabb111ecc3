//! Fault tolerance of `dispatch worker` processes on PostgreSQL, with a
//! fault-injecting TCP proxy between one worker and the database:
//!
//! - a worker cut off from the database for longer than its lease stops its
//!   agent before another worker takes the run over: the two executions
//!   never overlap in time, and the second is attempt 2;
//! - a database that goes down while a finished run's result is being saved
//!   (a restart) does not make the run execute again: the result is saved
//!   when it comes back.
//!
//! - a worker killed with SIGKILL takes its sandboxed agent with it (the
//!   agent's tree is tethered to it), and one frozen with SIGSTOP longer than
//!   the lease has its agent killed at the self-fencing deadline by the
//!   tether, not by its own (frozen) watchdog: no overlap either way; an
//!   unsandboxed agent the same, by its keeper (see `sandbox::keeper`).
//!
//! - a worker cut off while its agent still prints and then exits appends
//!   nothing to the run's log once the partition heals: its log, like its
//!   other writes, carries a fencing token the database no longer takes.
//!
//! Each execution of the agent writes its own file of heartbeats (one line
//! every 20 ms, the time in ms), so overlaps are measured, not inferred.

use dispatch_test_support::proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::{AttemptStore, PgStore, Run, RunLogStore, RunStore};
use dispatch_test_support::testdb::TestDatabase;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proxy::Proxy;
use serde_json::json;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// The lease the workers of these tests take: short, so a takeover is quick.
const LEASE_MS: u64 = 3000;

struct Setup {
    dir: tempfile::TempDir,
    db: TestDatabase,
    store: PgStore,
    proxy: Proxy,
    workers: Vec<Child>,
    /// Agents run in the sandbox and beat into their parcel's state
    /// directory (which the test reads on the host).
    sandboxed: bool,
}

impl Setup {
    /// A database, a proxy to it, and a parcel whose agent beats for
    /// `beats` × 20 ms into `beats/exec-<attempt>-<pid>`, touches
    /// `beats/finished-<pid>`, then lingers `linger` seconds before it exits 0.
    fn new(beats: u32, linger: &str) -> Option<Setup> {
        Setup::with(beats, linger, false)
    }

    /// As [`Setup::new`], the agents sandboxed: they beat into
    /// `$DISPATCH_STATE_DIR`.
    fn sandboxed(beats: u32, linger: &str) -> Option<Setup> {
        Setup::with(beats, linger, true)
    }

    fn with(beats: u32, linger: &str, sandboxed: bool) -> Option<Setup> {
        let dir = tempfile::tempdir().expect("tempdir");
        let beats_dir = match sandboxed {
            true => "$DISPATCH_STATE_DIR".to_string(),
            false => dir.path().join("beats").display().to_string(),
        };
        let script = format!(
            "f=\"{d}/exec-$DISPATCH_ATTEMPT-$$\"\n\
             i=0\n\
             while [ $i -lt {beats} ]; do date +%s%3N >> \"$f\"; sleep 0.02; i=$((i+1)); done\n\
             touch \"{d}/finished-$$\"\n\
             sleep {linger}\n\
             echo done\n",
            d = beats_dir
        );
        Setup::with_script(dir, &script, sandboxed)
    }

    /// A database, a proxy to it, and a parcel (unsandboxed) whose agent is
    /// `script` with `{d}` standing for the test's `beats` directory.
    fn scripted(script: &str) -> Option<Setup> {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = script.replace("{d}", &dir.path().join("beats").display().to_string());
        Setup::with_script(dir, &script, false)
    }

    fn with_script(dir: tempfile::TempDir, script: &str, sandboxed: bool) -> Option<Setup> {
        std::fs::create_dir_all(dir.path().join("beats")).expect("beats dir");
        let src = dir.path().join("agent");
        std::fs::create_dir_all(&src).expect("agent dir");
        std::fs::write(
            src.join("Agentfile"),
            "FROM process\nNAME beater\nCOPY agent.sh\nCOMMAND sh agent.sh\nRETRY 1\n",
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
        let upstream = "127.0.0.1:5432".parse().expect("an address");
        let proxy = Proxy::start(upstream).expect("the proxy starts");
        Some(Setup {
            dir,
            db,
            store,
            proxy,
            workers: Vec::new(),
            sandboxed,
        })
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path().join(".dispatch"))
    }

    fn beats_dir(&self) -> PathBuf {
        match self.sandboxed {
            true => self.layout().state_dir("beater"),
            false => self.dir.path().join("beats"),
        }
    }

    fn create_run(&self) -> RunId {
        let request = LaunchRequest {
            source: "beater".into(),
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

    /// A worker process named `name`, through the proxy or straight to the
    /// database; its stderr goes to `<name>.err`.
    fn worker(&mut self, name: &str, through_proxy: bool) {
        self.worker_with_grace(name, through_proxy, 1000);
    }

    /// As [`Setup::worker`], draining for up to `grace_ms` on SIGTERM.
    fn worker_with_grace(&mut self, name: &str, through_proxy: bool, grace_ms: u64) {
        let url = match through_proxy {
            true => self.proxy.url_for(self.db.url()),
            false => self.db.url().to_string(),
        };
        let err = std::fs::File::create(self.stderr_path(name)).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(["worker", "--database-url", &url, "--slots", "2"])
            .args(["--name", name, "--lease-ms", &LEASE_MS.to_string()])
            .args(["--grace-period-ms", &grace_ms.to_string()])
            .env("DISPATCH_ROOT", self.layout().root())
            // Unless sandboxed, the agents mark what they did in the test's
            // directory, which a sandboxed agent does not see.
            .env(
                "DISPATCH_SANDBOX",
                if self.sandboxed { "on" } else { "off" },
            )
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("the worker starts");
        self.workers.push(child);
    }

    fn stderr_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.err"))
    }

    fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.stderr_path(name)).unwrap_or_default()
    }

    fn run(&self, id: &RunId) -> Run {
        block_on(self.store.get_run(id)).expect("the run reads")
    }

    /// Polls the run until `done` holds (deadline 60 s).
    fn wait_for(&self, id: &RunId, what: &str, done: impl Fn(&Run) -> bool) -> Run {
        let deadline = Instant::now() + Duration::from_secs(60);
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

impl Drop for Setup {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = kill(Pid::from_raw(w.id() as i32), Signal::SIGKILL);
            let _ = w.wait();
        }
    }
}

/// One execution of the agent: its attempt and the first and last beat.
#[derive(Debug)]
struct Execution {
    attempt: u32,
    first: i64,
    last: i64,
    beats: usize,
}

fn executions(dir: &Path) -> Vec<Execution> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("beats dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("exec-") else {
            continue;
        };
        let attempt = rest
            .split('-')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("exec-<attempt>-<pid>");
        let text = std::fs::read_to_string(entry.path()).expect("beats");
        let times: Vec<i64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            found.push(Execution {
                attempt,
                first: *first,
                last: *last,
                beats: times.len(),
            });
        }
    }
    found.sort_by_key(|e| e.first);
    found
}

/// Waits until a `prefix*` file under `dir` holds `lines` whole lines (a
/// file that was only just created may have no beat in it yet).
fn wait_for_beats(dir: &Path, prefix: &str, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let beats = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .and_then(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.matches('\n').count())
        });
        if beats.is_some_and(|n| n >= lines) {
            return;
        }
        assert!(Instant::now() < deadline, "no {lines} beats in {prefix}*");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for_file(dir: &Path, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The state directory is made when the first run starts.
        let found = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no {prefix}* file appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_partitioned_worker_stops_its_agent_before_another_takes_the_run_over() {
    // 300 beats: about 6 s or more of work, twice the lease.
    let Some(mut setup) = Setup::new(300, "0") else {
        return;
    };
    let id = setup.create_run();
    setup.worker("cut-off", true);
    setup.wait_for(&id, "the first worker to start it", |r| {
        r.status() == Status::Running
    });
    wait_for_file(&setup.beats_dir(), "exec-1-");
    setup.proxy.partition();
    let cut_at = Instant::now();
    setup.worker("healthy", false);

    let second = setup.wait_for(&id, "the healthy worker to take it over", |r| {
        r.attempt == 2 && r.status() == Status::Running
    });
    // The cut-off worker comes back while the run is the other's.
    wait_for_file(&setup.beats_dir(), "exec-2-");
    setup.proxy.heal();
    let done = setup.wait_for(&id, "the run to end", |r| r.state.is_terminal());
    assert_eq!(done.status(), Status::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 2, "{second:?}");

    let execs = executions(&setup.beats_dir());
    assert_eq!(execs.len(), 2, "{execs:?}");
    let (first, second) = (&execs[0], &execs[1]);
    assert_eq!((first.attempt, second.attempt), (1, 2), "{execs:?}");
    assert!(first.beats < 300, "the first was stopped: {execs:?}");
    assert!(
        first.last < second.first,
        "the executions overlapped by {} ms: {execs:?}",
        first.last - second.first
    );
    let stopped_after =
        Duration::from_millis(u64::try_from(second.first - first.last).unwrap_or(0));
    eprintln!(
        "partition: first execution's last beat {} ms before the second's first; takeover {:?} after the cut",
        stopped_after.as_millis(),
        cut_at.elapsed()
    );

    let attempts = block_on(setup.store.list_attempts(&id)).expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].worker.as_deref(), Some("cut-off"));
    assert_eq!(attempts[0].status, Some(Status::Failed));
    let reason = attempts[0].error.as_deref().unwrap_or_default();
    assert!(reason.contains("lease expired"), "{attempts:?}");
    assert_eq!(attempts[1].worker.as_deref(), Some("healthy"));
    assert_eq!(attempts[1].status, Some(Status::Succeeded));
    let log = setup.stderr("cut-off");
    assert!(
        log.contains("stopping its agent before the lease can expire"),
        "{log}"
    );
}

#[test]
fn a_database_restart_while_a_result_is_saved_does_not_run_it_again() {
    // A short run that lingers 0.3 s after its marker: the database goes
    // down just before the agent exits and its result is saved.
    let Some(mut setup) = Setup::new(5, "0.3") else {
        return;
    };
    let id = setup.create_run();
    setup.worker("restarted", true);
    wait_for_file(&setup.beats_dir(), "finished-");
    setup.proxy.down();
    // Another worker is ready to take the run if its lease ran out.
    setup.worker("standby", false);
    std::thread::sleep(Duration::from_millis(2000));
    setup.proxy.heal();

    let done = setup.wait_for(&id, "the run to end", |r| r.state.is_terminal());
    assert_eq!(done.status(), Status::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 1, "{done:?}");
    let execs = executions(&setup.beats_dir());
    assert_eq!(execs.len(), 1, "executed once: {execs:?}");
    let attempts = block_on(setup.store.list_attempts(&id)).expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].worker.as_deref(), Some("restarted"));
    let log = setup.stderr("restarted");
    assert!(log.contains("saved after the database came back"), "{log}");
}

/// The size of every `exec-*` file under `dir`, by name.
fn beat_sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("beats dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .map(|e| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().to_string(), len)
        })
        .collect();
    sizes.sort();
    sizes
}

/// After `fault` is done to the worker holding the run, a healthy worker
/// takes it over: the two executions must not overlap.
fn no_overlap_after(setup: &mut Setup, id: &RunId, what: &str) {
    setup.worker("healthy", false);
    let done = setup.wait_for(id, "the run to end", |r| r.state.is_terminal());
    assert_eq!(done.status(), Status::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 2, "{done:?}");
    let execs = executions(&setup.beats_dir());
    assert_eq!(execs.len(), 2, "{execs:?}");
    let (first, second) = (&execs[0], &execs[1]);
    assert!(first.beats < 300, "the first was stopped: {execs:?}");
    assert!(
        first.last < second.first,
        "{what}: the executions overlapped by {} ms: {execs:?}",
        first.last - second.first
    );
}

#[test]
fn a_killed_workers_sandboxed_agent_dies_with_it() {
    let Some(mut setup) = Setup::sandboxed(300, "0") else {
        return;
    };
    let id = setup.create_run();
    setup.worker("doomed", false);
    wait_for_beats(&setup.beats_dir(), "exec-1-", 3);
    let pid = setup.workers[0].id();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 the worker");
    let _ = setup.workers[0].wait();
    // Give the tree a moment to go, then it must beat no more.
    std::thread::sleep(Duration::from_millis(300));
    let before = beat_sizes(&setup.beats_dir());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        before,
        beat_sizes(&setup.beats_dir()),
        "the agent of a killed worker still beats"
    );
    no_overlap_after(&mut setup, &id, "worker killed");
}

#[test]
fn a_frozen_workers_sandboxed_agent_is_killed_before_its_lease_expires() {
    let Some(mut setup) = Setup::sandboxed(300, "0") else {
        return;
    };
    let id = setup.create_run();
    setup.worker("frozen", false);
    wait_for_beats(&setup.beats_dir(), "exec-1-", 3);
    let pid = setup.workers[0].id();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("stop the worker");
    no_overlap_after(&mut setup, &id, "worker frozen");
    let log = setup.stderr("frozen");
    assert!(!log.contains("stopping its agent"), "it was frozen: {log}");
}

#[test]
fn a_partitioned_worker_appends_nothing_to_the_log_after_the_takeover() {
    // Attempt 1 prints, waits for the partition, prints more and exits 0
    // while cut off; attempt 2 prints and exits at once.
    let Some(mut setup) = Setup::scripted(
        "echo \"attempt $DISPATCH_ATTEMPT fence $DISPATCH_FENCE\"\n\
         if [ \"$DISPATCH_ATTEMPT\" = 1 ]; then\n\
           touch {d}/started\n\
           while [ ! -e {d}/partitioned ]; do sleep 0.02; done\n\
           i=0\n\
           while [ $i -lt 5 ]; do echo \"attempt 1 cut off $i\"; sleep 0.02; i=$((i+1)); done\n\
         fi\n\
         echo \"attempt $DISPATCH_ATTEMPT done\"\n",
    ) else {
        return;
    };
    let id = setup.create_run();
    // A long drain: on SIGTERM it waits for the run's task to end.
    setup.worker_with_grace("cut-off", true, 60_000);
    wait_for_file(&setup.beats_dir(), "started");
    // Attempt 1's first line is shipped before the cut.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(
        &block_on(setup.store.read_log(&id, 0, 1 << 20)).expect("the stored log"),
    )
    .contains("attempt 1 fence")
    {
        assert!(
            Instant::now() < deadline,
            "attempt 1's first line never shipped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    setup.proxy.partition();
    std::fs::write(setup.beats_dir().join("partitioned"), b"").expect("marker");
    setup.worker("healthy", false);
    let done = setup.wait_for(&id, "the healthy worker to finish it", |r| {
        r.state.is_terminal()
    });
    assert_eq!(
        (done.status(), done.attempt),
        (Status::Succeeded, 2),
        "{done:?}"
    );

    // The cut-off worker comes back, its agent's last lines and its own
    // `succeeded` line still unshipped; it is done with the run once it
    // drained (its task ended).
    setup.proxy.heal();
    let pid = setup.workers[0].id();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("drain the cut-off worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.workers[0].try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the cut-off worker never drained; its log:\n{}",
            setup.stderr("cut-off")
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let log = block_on(setup.store.read_log(&id, 0, 1 << 20)).expect("the stored log");
    let log = String::from_utf8_lossy(&log).to_string();
    let lines: Vec<&str> = log.lines().collect();
    let finals: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("succeeded (exit 0)"))
        .collect();
    assert_eq!(finals.len(), 1, "exactly one final line:\n{log}");
    let attempt_2_done = lines
        .iter()
        .position(|l| l.contains("attempt 2 done"))
        .unwrap_or_else(|| panic!("attempt 2's output is stored:\n{log}"));
    assert!(finals[0] > attempt_2_done, "{log}");
    assert!(
        lines[attempt_2_done..]
            .iter()
            .all(|l| !l.contains("attempt 1")),
        "no line of attempt 1 after attempt 2's:\n{log}"
    );
    assert!(
        !log.contains("attempt 1 cut off"),
        "what attempt 1 printed while cut off stays on its worker:\n{log}"
    );
    // Each attempt saw its own token, the later one higher.
    let fence = |attempt: u32| -> i64 {
        let prefix = format!("attempt {attempt} fence ");
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("attempt {attempt} printed its DISPATCH_FENCE:\n{log}"))
    };
    assert!(fence(2) > fence(1), "{log}");
    let stderr = setup.stderr("cut-off");
    assert_eq!(
        stderr.matches("refused this worker's log").count(),
        1,
        "the refusal is said once, and shipping stops: {stderr}"
    );
}

/// A worker told to stop (SIGTERM) while cut off from its database stops
/// within its grace period and a bounded time more: every store call on its
/// way out gives up, rather than waiting for the partition to heal (a
/// dropped packet is retransmitted for many minutes before TCP gives up).
/// Its run goes back to the queue when the lease expires, and its agent
/// never runs beside the next attempt.
#[test]
fn a_partitioned_worker_told_to_stop_exits_without_waiting_for_the_database() {
    let Some(mut setup) = Setup::new(300, "0") else {
        return;
    };
    let id = setup.create_run();
    setup.worker("cut-off", true);
    wait_for_beats(&setup.beats_dir(), "exec-1-", 3);
    setup.proxy.partition();
    let pid = setup.workers[0].id();
    let told = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("stop the worker");
    // Its grace (1 s), then at most a few calls of L/6 (0.5 s) each.
    let limit = Duration::from_secs(20);
    while setup.workers[0].try_wait().expect("wait").is_none() {
        assert!(
            told.elapsed() < limit,
            "still running {} s after SIGTERM while cut off; its log:\n{}",
            told.elapsed().as_secs(),
            setup.stderr("cut-off")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    no_overlap_after(&mut setup, &id, "worker stopped while cut off");
}

/// Without the sandbox (no PID namespace), the run's keeper enforces the
/// same deadline on its containment group: the agent of a worker that stays
/// frozen is killed before it finishes its beats. (No takeover here: on one
/// machine the next attempt would empty the run's group before it starts.)
#[test]
fn a_frozen_workers_unsandboxed_agent_is_killed_at_the_deadline() {
    let Some(mut setup) = Setup::new(300, "0") else {
        return;
    };
    setup.create_run();
    setup.worker("frozen", false);
    wait_for_beats(&setup.beats_dir(), "exec-1-", 3);
    let pid = setup.workers[0].id();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("stop the worker");
    // The beats stop: at the deadline, or after all 300 (~6 s) if nothing
    // kills the agent.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = beat_sizes(&setup.beats_dir());
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = beat_sizes(&setup.beats_dir());
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "the beats never stopped");
        last = now;
    }
    let finished = std::fs::read_dir(setup.beats_dir())
        .expect("beats dir")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("finished-"));
    assert!(!finished, "the frozen worker's agent ran to its end");
}
