//! `dispatch-bench local [--dispatch PATH] [--only latency|floors|throughput]`
//! (and `service`, see service.rs): measures the local runtime's
//! targets against a built `dispatch` binary (default: target/release/dispatch)
//! and prints a Markdown table; `floors` measures what time to agent cannot
//! go below here (see `floors.rs`). See BENCHMARKS.md.
//!
//! `dispatch-bench cluster [--database-url URL] [--runs N] [--latency N] [--batch N]
//! [--process-runs N] [--slots N] [--only noop|process|latency]`: noop-courier
//! and `true`-process throughput of workers on PostgreSQL and on SQLite, and
//! the latency from `POST /v1/runs` to the agent's start (see `cluster.rs`).
//!
//! `dispatch-bench telemetry [--runs N] [--rounds R]` and `dispatch-bench
//! retention [--seed N] [--rate R] [--alone-secs S] [--batch N] [--pause-ms M]
//! [--yield F]`: OTLP export's cost and retention under
//! load, on PostgreSQL (see `telemetry.rs`).
//!
//! `dispatch-bench idle [--dispatch PATH] [--secs N]`: an idle cluster's
//! database load (see `idle.rs`).
//!
//! `dispatch-bench chaos [--help] [--dispatch PATH] [--runs N] [--faults LIST] …`:
//! workers killed alone and with their agents, frozen, partitioned, agents
//! killed and the database restarted under load (see `chaos/`).
//!
//! `dispatch-bench tools`: the native agent's tools — LOCAL and MCP call
//! overhead, approval latency (see `tools.rs`).
//!
//! `dispatch-bench waits [--suspended N] [--latency K] [--waiters W]`: durable
//! waits on PostgreSQL (see `waits.rs`).
//!
//! `dispatch-bench isolation [--baseline OLD] [--n N]`: workspace creation and
//! time to agent with the workspace and scrubbed environment (see `isolation.rs`).
//! `dispatch-bench container [--runs N] [--image REF]`: the container
//! courier's start-up against a bare `podman run -d` (see `container.rs`).
//! `dispatch-bench eval [--cases N] [--calls N]`: `dispatch eval` recorded
//! live and replayed offline, and one replayed model call (see `eval.rs`).
//! `dispatch-bench resources [--n N]`: `run --detach` → agent executing with
//! and without `RESOURCES` (see `resources.rs`).
//!
//! `dispatch-bench workflow [--hops N] [--fanout N] [--rounds R]`: multi-agent
//! runs — per-hop coordination overhead and a fan-out of noop members (see `workflow.rs`).
//! `dispatch-bench workflow-cluster [--hops N] [--rounds R]`: the per-hop overhead on
//! PostgreSQL, a server and one worker (see `workflow_cluster.rs`).
//! `dispatch-bench artifacts [--mb N] [--rounds N]`: an artifact uploaded to
//! and downloaded from the artifact store, local and S3-compatible (see
//! `artifacts.rs`).
//! `dispatch-bench artifacts-server [--mb N] [--rounds N]`: an artifact
//! downloaded through a real server's endpoint from PostgreSQL, S3-compatible
//! and local stores (see `artifacts_server.rs`).
//! `dispatch-bench ui [--runs N] [--events N] [--log-mb N]`: the dashboard's
//! pages over a seeded store of 100,000 runs (see `ui.rs`).
//!
//! `dispatch-bench rates [--calls N] [--tasks N]`: a model rate-bucket
//! check in PostgreSQL against one in Redis (see `rates.rs`).
//!
//! `dispatch-bench mock-llm`: the scripted mock model server (see `mock_llm.rs`);
//! `dispatch-bench native`: the native agent courier's targets (see `native.rs`).
//! `dispatch-bench wasm [--n N]`: a WASM agent's start beside a process
//! agent's and a native agent's (see `wasm.rs`).

use dispatch_core::EventKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_core::{NewEvent, Operation, RunId, RunState, Transition, now_ms};
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{NewRun, RunStore, StateWrite};

mod artifacts;
mod artifacts_server;
mod batch;
mod chaos;
mod cluster;
mod concurrency;
mod container;
mod cpu;
mod eval;
mod floors;
mod idle;
mod isolation;
mod mock_llm;
mod native;
mod parcel;
mod policy;
mod rates;
mod resources;
mod service;
mod service_cluster;
mod telemetry;
mod tools;
mod ui;
mod usage;
mod waits;
mod wasm;
mod workflow;
mod workflow_cluster;

/// A throwaway PostgreSQL database (`--database-url`, else 127.0.0.1:5432)
/// for `dispatch-bench what`; without one, says how to start one and exits 1.
pub(crate) fn fresh_database(
    args: &[String],
    what: &str,
) -> dispatch_test_support::testdb::TestDatabase {
    use_database_url(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(dispatch_test_support::testdb::TestDatabase::create()) {
        Some(db) => db,
        None => {
            eprintln!(
                "dispatch-bench {what}: no PostgreSQL (start one on 127.0.0.1:5432, or pass --database-url)"
            );
            std::process::exit(1);
        }
    }
}

/// The value after `flag` on the command line, if any.
pub(crate) fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `--database-url URL`: where the throwaway databases are made
/// (`DISPATCH_TEST_PG`, read by `TestDatabase::create`).
pub(crate) fn use_database_url(args: &[String]) {
    if let Some(url) = flag_value(args, "--database-url") {
        // SAFETY: single-threaded at this point; read by TestDatabase::create.
        unsafe { std::env::set_var("DISPATCH_TEST_PG", url) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    usage::help_if_asked(&args);
    let dispatch = flag_value(&args, "--dispatch")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/dispatch"));
    if args.get(1).map(String::as_str) == Some("seed") {
        // dispatch-bench seed <db> <n>: store n finished runs (for profiling).
        let (Some(db), Some(n)) = (args.get(2), args.get(3).and_then(|n| n.parse().ok())) else {
            eprintln!("usage: dispatch-bench seed <db-path> <n>");
            std::process::exit(2);
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(seed(Path::new(db), n));
        return;
    }
    if args.get(1).map(String::as_str) == Some("artifacts-server") {
        artifacts_server::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("artifacts") {
        artifacts::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("mock-llm") {
        std::process::exit(mock_llm::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("native") {
        native::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("wasm") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        wasm::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("eval") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        eval::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("parcel") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        parcel::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("batch") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        batch::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("chaos") {
        let dispatch = dispatch.canonicalize().unwrap_or(dispatch);
        chaos::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("container") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        container::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("tools") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        tools::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("isolation") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        isolation::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("ui") {
        ui::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("resources") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        resources::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("workflow") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        workflow::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("workflow-cluster") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        workflow_cluster::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("waits") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        waits::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("policy") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        policy::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("rates") {
        rates::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("concurrency") {
        concurrency::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("service-cluster") && dispatch.is_file() {
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        service_cluster::main(&dispatch, &args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("telemetry") {
        telemetry::telemetry(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("retention") {
        telemetry::retention(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("cluster") {
        cluster::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("service") && dispatch.is_file() {
        // dispatch-bench service [--dispatch PATH] [--idle-secs N]: see service.rs.
        let idle = flag_value(&args, "--idle-secs")
            .and_then(|n| n.parse().ok())
            .unwrap_or(60);
        let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
        service::run(&dispatch, idle);
        return;
    }
    if args.get(1).map(String::as_str) == Some("idle") && dispatch.is_file() {
        let secs = flag_value(&args, "--secs")
            .and_then(|n| n.parse().ok())
            .unwrap_or(60);
        idle::run(
            &dispatch.canonicalize().expect("dispatch path resolves"),
            secs,
        );
        return;
    }
    if args.get(1).map(String::as_str) != Some("local") || !dispatch.is_file() {
        usage::refuse(&args[1], &dispatch);
    }
    let dispatch = dispatch.canonicalize().expect("dispatch path resolves");
    let bench = Bench::new(dispatch);
    // `--only latency`: the baseline and the two latencies (quick to repeat);
    // `--only floors`: what time to agent cannot go below here (`floors.rs`);
    // `--only throughput`: the 1,000 detached runs alone.
    let only = flag_value(&args, "--only");
    if let Some(other) = only
        .as_deref()
        .filter(|o| !["latency", "floors", "throughput"].contains(o))
    {
        eprintln!("dispatch-bench local: unknown --only {other} (latency, floors or throughput)");
        std::process::exit(2);
    }
    println!("| measurement | result | target |\n|---|---|---|");
    match only.as_deref() {
        Some("floors") => return floors::run(&bench.dispatch, 200),
        Some("throughput") => return bench.throughput(1_000, 4),
        _ => {}
    }
    let only_latency = only.is_some();
    bench.spawn_baseline();
    bench.detach_latency(200);
    bench.time_to_agent(200, Probe::Date);
    bench.time_to_agent(200, Probe::DateC);
    bench.sandbox_on_off(200);
    if only_latency {
        return;
    }
    bench.ps_over(10_000);
    bench.throughput(1_000, 4);
}

/// The agent that reads the clock when it starts.
#[derive(Clone, Copy)]
enum Probe {
    /// `date +%s%N` in the caller's locale: its own start-up (a dozen
    /// locale files under `LANG=C.UTF-8`) counts too.
    Date,
    /// The same with `LC_ALL=C` (`ENV` in its Agentfile): the clock is read
    /// about as soon as the process executes.
    DateC,
}

struct Bench {
    dispatch: PathBuf,
    /// Every measurement's directory, removed only when the bench ends: on
    /// ext4 without a journal (this machine's root), creating a file skips
    /// each inode deleted in the last 5 to 35 seconds, one by one, so a
    /// measurement taken right after deleting the last one's thousands of
    /// files would pay for that deletion.
    dirs: std::sync::Mutex<Vec<tempfile::TempDir>>,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `p` quantile of `v` (NaN when empty).
pub(crate) fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// When the mock model received its request number `before` (counted from
/// 0), in µs since the epoch; `None` when none came within `wait`.
pub(crate) fn next_request_at(
    mock: &dispatch_test_support::mock::MockServer,
    before: usize,
    wait: std::time::Duration,
) -> Option<u64> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let reqs = mock.requests();
        if reqs.len() > before {
            return reqs.get(before).map(|r| r.received_at_us);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Microseconds since the epoch, as the agents' probes print them.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn agent(dir: &Path, name: &str, command: &str) -> PathBuf {
    let a = dir.join(name);
    std::fs::create_dir_all(&a).expect("mkdir agent");
    std::fs::write(
        a.join("Agentfile"),
        format!("NAME {name}\nCOMMAND {command}\n"),
    )
    .expect("write Agentfile");
    a
}

impl Bench {
    fn new(dispatch: PathBuf) -> Self {
        Bench {
            dispatch,
            dirs: Default::default(),
        }
    }

    /// A new directory for one measurement, kept until the bench ends.
    fn workdir(&self) -> PathBuf {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        self.dirs.lock().expect("not poisoned").push(dir);
        path
    }

    fn cmd(&self, root: &Path) -> Command {
        let mut c = Command::new(&self.dispatch);
        c.env("DISPATCH_ROOT", root).stdin(Stdio::null());
        c
    }

    fn spawn_baseline(&self) {
        let n = 500;
        let t = Instant::now();
        for _ in 0..n {
            Command::new("true").status().expect("spawn true");
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!("| baseline: spawn+wait `true` | {ms:.2} ms each | — |");
    }

    /// `dispatch run <agent> --detach` wall time.
    fn detach_latency(&self, n: usize) {
        let dir = self.workdir();
        let root = dir.join(".dispatch");
        let a = agent(&dir, "noop", r#"["true"]"#);
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let t = Instant::now();
            let out = self
                .cmd(&root)
                .args(["run", a.to_str().expect("utf-8"), "--detach"])
                .output()
                .expect("run dispatch");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if i >= 5 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        self.wait_all(&root);
        println!(
            "| `dispatch run --detach` returns (n={n}) | median {:.2} ms, p90 {:.2} ms | ≤ 10 ms median |",
            median(times.clone()),
            pct(times, 0.9)
        );
    }

    /// From just before `run --detach` to the agent executing (`date +%s%N` as the agent).
    fn time_to_agent(&self, n: usize, probe: Probe) {
        let dir = self.workdir();
        let root = dir.join(".dispatch");
        let (a, shown) = match probe {
            Probe::Date => (agent(&dir, "clock", r#"["date", "+%s%N"]"#), "`date`"),
            Probe::DateC => {
                let a = agent(&dir, "clock", r#"["date", "+%s%N"]"#);
                let file = a.join("Agentfile");
                let text = std::fs::read_to_string(&file).expect("Agentfile");
                std::fs::write(&file, format!("{text}ENV LC_ALL=C\n")).expect("Agentfile");
                (a, "`date`, `LC_ALL=C`")
            }
        };
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as i128;
            let out = self
                .cmd(&root)
                .args(["run", a.to_str().expect("utf-8"), "--detach"])
                .output()
                .expect("run dispatch");
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            self.cmd(&root).args(["wait", &id]).output().expect("wait");
            let log =
                std::fs::read_to_string(root.join("runs").join(format!("{id}.log"))).expect("log");
            let ns: i128 = log
                .lines()
                .find(|l| !l.starts_with("[dispatch]"))
                .and_then(|l| l.trim().parse().ok())
                .expect("the agent printed its start time");
            lat.push((ns - t0) as f64 / 1e6);
        }
        println!(
            "| `run --detach` → agent process executing (n={n}, probe {shown}) | median {:.2} ms, p90 {:.2} ms | ≤ 5 ms median |",
            median(lat.clone()),
            pct(lat, 0.9)
        );
    }

    /// `run --detach` → agent executing with the sandbox on and off
    /// (`DISPATCH_SANDBOX=off`), interleaved run by run in the same minutes.
    fn sandbox_on_off(&self, n: usize) {
        let dir = self.workdir();
        let root = dir.join(".dispatch");
        let a = agent(&dir, "clock", r#"["date", "+%s%N"]"#);
        let (mut on, mut off) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..2 * n {
            let sandboxed = i % 2 == 0;
            let t0 = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as i128;
            let mut cmd = self.cmd(&root);
            if !sandboxed {
                cmd.env("DISPATCH_SANDBOX", "off");
            }
            let out = cmd
                .args(["run", a.to_str().expect("utf-8"), "--detach"])
                .output()
                .expect("run dispatch");
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            self.cmd(&root).args(["wait", &id]).output().expect("wait");
            let log =
                std::fs::read_to_string(root.join("runs").join(format!("{id}.log"))).expect("log");
            let ns: i128 = log
                .lines()
                .find(|l| !l.starts_with("[dispatch]"))
                .and_then(|l| l.trim().parse().ok())
                .expect("the agent printed its start time");
            let said = log.lines().find(|l| l.starts_with("[dispatch] sandbox:"));
            assert!(
                said.is_some_and(|l| l.contains("off") != sandboxed),
                "the run says which sandbox it got: {log}"
            );
            match sandboxed {
                true => on.push((ns - t0) as f64 / 1e6),
                false => off.push((ns - t0) as f64 / 1e6),
            }
        }
        let (on50, off50) = (median(on.clone()), median(off.clone()));
        println!(
            "| `run --detach` → agent executing, sandbox on vs off (`DISPATCH_SANDBOX=off`), interleaved (n={n} each) | on: p50 {on50:.2} ms, p90 {:.2} ms · off: p50 {off50:.2} ms, p90 {:.2} ms · cost p50 {:.2} ms | ≤ 2 ms p50 |",
            pct(on, 0.9),
            pct(off, 0.9),
            on50 - off50
        );
    }

    /// `dispatch ps -a` with `runs` finished runs stored.
    fn ps_over(&self, runs: usize) {
        let dir = self.workdir();
        let root = dir.join(".dispatch");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(seed(&root.join("dispatch.db"), runs));
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let out = self
                .cmd(&root)
                .args(["ps", "-a"])
                .stdout(Stdio::piped())
                .output()
                .expect("ps");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), runs + 1);
        }
        let mut json_times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            self.cmd(&root)
                .args(["ps", "-a", "--format", "json"])
                .output()
                .expect("ps");
            json_times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "| `dispatch ps -a` over {runs} runs | median {:.1} ms (`--format json`: {:.1} ms) | ≤ 50 ms |",
            median(times),
            median(json_times)
        );
    }

    /// `n` detached runs of `true`, launched `parallel` at a time, until all are finished.
    fn throughput(&self, n: usize, parallel: usize) {
        let dir = self.workdir();
        let root = dir.join(".dispatch");
        let a = agent(&dir, "noop", r#"["true"]"#);
        self.cmd(&root)
            .args(["build", a.to_str().expect("utf-8"), "-q"])
            .output()
            .expect("build");
        let busy_before = native::budget::machine_ms();
        let t = Instant::now();
        std::thread::scope(|s| {
            for w in 0..parallel {
                let a = &a;
                let root = &root;
                s.spawn(move || {
                    for _ in (w..n).step_by(parallel) {
                        let st = self
                            .cmd(root)
                            .args(["run", a.to_str().expect("utf-8"), "--detach"])
                            .stdout(Stdio::null())
                            .status()
                            .expect("run");
                        assert!(st.success());
                    }
                });
            }
        });
        let launched = t.elapsed();
        self.wait_all(&root);
        let total = t.elapsed();
        let busy_ms = native::budget::machine_ms().saturating_sub(busy_before) as f64;
        let out = self
            .cmd(&root)
            .args(["ps", "-a", "--filter", "status=succeeded", "-q"])
            .output()
            .expect("ps");
        let ok = out.stdout.iter().filter(|b| **b == b'\n').count();
        if ok != n {
            // Which ones did not, and how they are, before the panic.
            let all = self
                .cmd(&root)
                .args(["ps", "-a", "--format", "json"])
                .output()
                .expect("ps");
            let runs: Vec<serde_json::Value> =
                serde_json::from_slice(&all.stdout).unwrap_or_default();
            for r in runs.iter().filter(|r| r["state"]["status"] != "succeeded") {
                eprintln!("not succeeded: {} {}", r["id"], r["state"]);
            }
        }
        assert_eq!(ok, n, "every run succeeded");
        // And the database they wrote is intact: SQLite's WAL-reset race
        // (fixed in 3.51.3) corrupted it about once in 150 of these.
        let check = integrity(&root.join("dispatch.db"));
        assert_eq!(check, "ok", "the run database after {n} runs");
        // Where the rate comes from: the machine's CPU a run, and how busy
        // its cores were (the launchers' own share is in it).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let busy = busy_ms / (total.as_secs_f64() * 1000.0 * cores as f64);
        println!(
            "| {n} detached runs of a trivial agent, {parallel} launchers | {:.0} runs/s ({:.2} s to finish all; launches done at {:.2} s; the machine's CPU {:.2} ms a run, its {cores} cores {:.0} % busy: 300 runs/s at that would take ≤ {:.2} ms a run) | ≥ 300 runs/s |",
            n as f64 / total.as_secs_f64(),
            total.as_secs_f64(),
            launched.as_secs_f64(),
            busy_ms / n as f64,
            100.0 * busy,
            1000.0 * cores as f64 * busy / 300.0,
        );
    }

    /// Waits until no run is live.
    fn wait_all(&self, root: &Path) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = self.cmd(root).args(["ps", "-q"]).output().expect("ps");
            // A `ps` that failed listed nothing: say why and look again.
            if !out.status.success() {
                eprintln!("ps -q: {}", String::from_utf8_lossy(&out.stderr).trim());
            } else if out.stdout.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "runs did not finish in 300 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The first lines `PRAGMA integrity_check` says of the database at `db`.
fn integrity(db: &Path) -> String {
    let lines = rusqlite::Connection::open(db).and_then(|conn| {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines = stmt
            .query_map([], |row| row.get::<_, String>(0))?
            .take(5)
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines.join("; "))
    });
    lines.unwrap_or_else(|e| e.to_string())
}

/// Stores `n` finished runs directly.
async fn seed(db: &Path, n: usize) {
    let store = SqliteStore::open(db, Duration::from_secs(5)).expect("open store");
    let helper = dispatch_core::ProcRef {
        pid: 1,
        start_ticks: 0,
    };
    for i in 0..n {
        let run = store
            .create_run(&NewRun {
                id: RunId::new(),
                parcel_digest: "0".repeat(64),
                parcel_name: "seeded".into(),
                operation: Operation::Job,
                parent_id: None,
                origin_id: None,
                payload: serde_json::json!({ "i": i }),
                brief_sha256: "0".repeat(64),
                created_at: now_ms(),
                claimed_by: None,
                created: false,
                trigger: dispatch_core::Trigger::Manual,
                handoff_key: None,
                project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
            })
            .await
            .expect("create");
        let mut state = RunState::queued();
        let mut version = run.version;
        for t in [
            Transition::Claim {
                helper,
                at: now_ms(),
            },
            Transition::AgentStarted {
                agent: helper,
                at: now_ms(),
            },
            Transition::Exited {
                code: 0,
                at: now_ms(),
            },
        ] {
            state = state.apply(Operation::Job, &t).expect("legal");
            let r = store
                .transition(
                    &run.id,
                    version,
                    &StateWrite::new(
                        state.clone(),
                        NewEvent::new(EventKind::State, 1, now_ms(), serde_json::json!({})),
                    ),
                )
                .await
                .expect("transition");
            version = r.version;
        }
    }
}
