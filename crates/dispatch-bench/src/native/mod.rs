//! `dispatch-bench native [OPTIONS]` (`--help` says what each measurement
//! does): the native agent courier's targets against a `dispatch` binary
//! and the scripted mock model server (`dispatch_test_support::mock`) on
//! loopback: start, concurrency (submission and execution apart), SSE
//! latency, memory per waiting run (`memory.rs`), and `--python` beside
//! (`python.rs`). What it prints: `report.rs`.

pub(crate) mod budget;
mod floor;
mod memory;
mod model_floor;
mod python;
mod report;

use dispatch_test_support::http;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::{PgStore, RunFilter, RunStore};
use dispatch_test_support::mock::{MockServer, Script};
use dispatch_test_support::testdb::TestDatabase;
use report::Report;
use serde_json::json;

use crate::{now_us, pct};

fn script(value: serde_json::Value) -> Script {
    serde_json::from_value(value).expect("a valid mock script")
}

fn agent_dir(root: &Path, name: &str, body: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("agent dir");
    std::fs::write(dir.join("Agentfile"), body).expect("Agentfile");
    dir
}

const ABOUT: &str = "The native agent courier's targets: start, concurrency with a LOCAL tool \
(submission and execution apart, CPU per model round), SSE latency, memory per waiting run";

const LONG_ABOUT: &str = "\
The native agent courier's targets, against a `dispatch` binary (release, for
speed numbers) and a scripted mock model on loopback. Each measurement makes
its own throwaway PostgreSQL database (a unique name) and listens on free
ports unless told which, so it can run beside other work.

Measurements (all but memory by default; `--only NAME` for one):
  start        `dispatch run --detach` of a native agent → the mock's first
               request (p50, p99), beside a process agent's start and a bare
               spawn of `true` in the same minutes.
  concurrency  --runs native runs on one `dispatch worker` with as many slots;
               each makes 3 model calls (the mock answers each after 2 s) and
               2 calls of a LOCAL tool `lookup` (a shell script): submission
               (runs/s and time until all are submitted) and execution (first
               claim → last end, against the ideal 6 s) apart, the worker's
               peak RSS, its CPU per model round and its children's CPU,
               and where the machine's CPU went meanwhile (the worker, its
               tools, PostgreSQL, the bench and its mock, the rest); beside
               it, two floors: the tools' (as many `sh lookup.sh` as the
               runs called, two at a time, started by the bench alone) and
               the model calls' (as many calls as the runs made, by the bench
               to the same mock with a bare HTTP client), against what the
               cores have in 1.5× the ideal.
  sse          a `dispatch server` and an SSE client: the mock writing a run's
               first token → the client reading its `delta` event.
  memory       the worker's memory per run waiting on its model: the runs do
               their 2 tool rounds at once, then the mock holds their third
               call (their whole conversation in flight) for an hour. Sampled
               idle and once --memory-levels runs wait (RSS, anonymous
               memory, threads); per run = the difference between two
               levels over the difference in runs. Twice: the mock over
               plain HTTP/1.1 (a connection per waiting call), then over TLS
               with HTTP/2 chosen by ALPN, as the providers are reached (the
               calls share a connection); the HTTP client alone beside each.

Output: a Markdown table, a row as each measurement ends, or with
`--format json` one JSON object, a key per measurement, each an object of
numbers (`null` where nothing was measured).

Exit codes: 0 done (whatever was measured; a measurement whose PostgreSQL is
unreachable is reported skipped), 2 bad arguments or no binary.";

/// `dispatch-bench native`: the native agent courier's targets.
#[derive(clap::Parser, Debug)]
#[command(
    name = "dispatch-bench native",
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = "Examples:\n  dispatch-bench native --dispatch target/release/dispatch --only concurrency --runs 300\n  \
                  dispatch-bench native --only memory --memory-levels 500,2000 --format json\n  \
                  dispatch-bench native --only start --latency 100 --mock-port 18080"
)]
struct Args {
    /// The `dispatch` binary to measure (build it first: cargo build --release -p dispatch-cli).
    #[arg(long, value_name = "PATH", default_value = "target/release/dispatch")]
    dispatch: PathBuf,
    /// PostgreSQL server where the throwaway databases are made, one per
    /// measurement, each with a unique name (else DISPATCH_TEST_PG, else
    /// postgres://postgres@127.0.0.1:5432/test).
    #[arg(long, value_name = "URL", env = "DISPATCH_TEST_PG")]
    database_url: Option<String>,
    /// Native runs in the concurrency measurement (one worker, as many slots).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    runs: usize,
    /// Samples of the start measurement.
    #[arg(long, value_name = "N", default_value_t = 200)]
    latency: usize,
    /// Samples of the SSE measurement.
    #[arg(long, value_name = "N", default_value_t = 50)]
    sse: usize,
    /// Only this measurement (memory runs only when named here).
    #[arg(long, value_name = "NAME", value_parser = ["start", "concurrency", "sse", "memory"])]
    only: Option<String>,
    /// How many runs wait at once when the memory measurement samples the
    /// worker, ascending, comma-separated (one worker with as many slots as
    /// the last).
    #[arg(long, value_name = "N,N,..", value_delimiter = ',', default_values_t = [500, 2000])]
    memory_levels: Vec<usize>,
    /// The memory measurement's runs start with an input of this many KiB
    /// of text (0: the word `go`): it is in every request of the run, so
    /// the memory a waiting run holds per byte of its conversation shows
    /// beside a run of the default input.
    #[arg(long, value_name = "KIB", default_value_t = 0)]
    memory_input_kib: usize,
    /// Port of the scripted mock model on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    mock_port: u16,
    /// Port of the `dispatch server` of the SSE measurement on 127.0.0.1
    /// (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    server_port: u16,
    /// Seconds the concurrency measurement waits for its runs to end, and
    /// the memory measurement for each level's runs to wait.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Submit every run of the concurrency measurement before the worker
    /// starts (else while it runs).
    #[arg(long)]
    queued: bool,
    /// Also the same loop as a Python `openai` process agent (installed into
    /// a venv under the bench's temporary directory): start and memory.
    #[arg(long)]
    python: bool,
    /// A Markdown table (a row as each measurement ends) or one JSON object.
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

/// Where the mock model listens.
fn mock_on(rt: &tokio::runtime::Runtime, port: u16, s: Script) -> MockServer {
    serve_mock(rt, port, s, false)
}

/// The mock model on `port`, over TLS (HTTP/2 or HTTP/1.1 by ALPN) or not.
fn serve_mock(rt: &tokio::runtime::Runtime, port: u16, s: Script, tls: bool) -> MockServer {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = match tls {
        true => rt.block_on(MockServer::start_tls_on(addr, s)),
        false => rt.block_on(MockServer::start_on(addr, s)),
    };
    started.unwrap_or_else(|e| {
        eprintln!(
            "dispatch-bench native: cannot listen on {addr}: {e} (choose another --mock-port, or 0)"
        );
        std::process::exit(2);
    })
}

pub fn main(args: &[String]) {
    use clap::Parser;
    // The memory measurement's HTTP client floor, in a process of its own.
    if let [cmd, url] = args
        && cmd == "__hold-calls"
    {
        memory::hold_calls(url);
        return;
    }
    let argv = std::iter::once("dispatch-bench native".to_string()).chain(args.iter().cloned());
    let a = Args::parse_from(argv);
    if let Some(url) = &a.database_url {
        // SAFETY: single-threaded at this point; read by TestDatabase::create.
        unsafe { std::env::set_var("DISPATCH_TEST_PG", url) };
    }
    let dispatch = match a.dispatch.canonicalize() {
        Ok(d) if d.is_file() => d,
        _ => {
            eprintln!(
                "dispatch-bench native: no binary at {} (build it: cargo build --release -p dispatch-cli, or pass --dispatch PATH)",
                a.dispatch.display()
            );
            std::process::exit(2);
        }
    };
    let dispatch = dispatch.as_path();
    let wanted = |what: &str| a.only.as_deref().is_none_or(|o| o == what) && what != "memory";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if a.memory_levels.is_empty()
        || a.memory_levels.contains(&0)
        || a.memory_levels.windows(2).any(|w| w[0] >= w[1])
    {
        eprintln!(
            "dispatch-bench native: --memory-levels takes run counts above 0 in ascending order, such as 500,2000"
        );
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Report::new(a.format == "json");
    if wanted("start") {
        start(&rt, dispatch, dir.path(), &a, &mut out);
    }
    if wanted("concurrency") {
        concurrency(&rt, dispatch, dir.path(), &a, &mut out);
    }
    if wanted("sse") {
        sse_latency(&rt, dispatch, dir.path(), &a, &mut out);
    }
    if a.only.as_deref() == Some("memory") {
        memory::measure(&rt, dispatch, dir.path(), &a, &mut out);
    }
    if a.python {
        python::side_by_side(&rt, dispatch, dir.path(), &mut out);
    }
    out.finish();
}

/// `run --detach` → the mock's first request.
fn start(rt: &tokio::runtime::Runtime, dispatch: &Path, root: &Path, a: &Args, out: &mut Report) {
    let n = a.latency;
    let mock = mock_on(
        rt,
        a.mock_port,
        script(json!({"steps": [], "record_bodies": false})),
    );
    let state = root.join("start");
    let agent = agent_dir(
        root,
        "native-start",
        &format!(
            "FROM agent\nNAME native-start\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n",
            mock.base_url()
        ),
    );
    let cmd = |args: &[&str]| {
        let mut c = Command::new(dispatch);
        c.args(args)
            .env("DISPATCH_ROOT", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let _ = cmd(&["build", agent.to_str().expect("utf-8")]).status();
    // Beside it: a process agent's start (`date` prints when it runs), the
    // local runtime's own measure of time to agent.
    let process = agent_dir(
        root,
        "process-start",
        "FROM process\nNAME process-start\nCOMMAND [\"/bin/date\", \"+%s%N\"]\n",
    );
    let _ = cmd(&["build", process.to_str().expect("utf-8")]).status();
    let mut proc_start = Vec::new();
    let mut spawn_true = Vec::new();
    let mut native = Vec::new();
    for i in 0..n + 5 {
        let t = Instant::now();
        let _ = Command::new("true").status();
        let base = t.elapsed().as_secs_f64() * 1e3;
        let before = mock.requests().len();
        let t0 = now_us();
        let _ = cmd(&["run", agent.to_str().expect("utf-8"), "--detach"]).status();
        let got = crate::next_request_at(&mock, before, Duration::from_secs(10));
        let t1 = now_us();
        let out = Command::new(dispatch)
            .args(["run", process.to_str().expect("utf-8"), "--detach"])
            .env("DISPATCH_ROOT", &state)
            .stderr(Stdio::null())
            .output()
            .expect("run");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let _ = cmd(&["wait", &id]).status();
        let log = std::fs::read_to_string(state.join("runs").join(format!("{id}.log")))
            .unwrap_or_default();
        let ran = log
            .lines()
            .find_map(|l| l.trim().parse::<u64>().ok())
            .map(|ns| ns / 1_000);
        if i >= 5 {
            if let Some(at) = ran {
                proc_start.push(at.saturating_sub(t1) as f64 / 1e3);
            }
            spawn_true.push(base);
            if let Some(at) = got {
                native.push(at.saturating_sub(t0) as f64 / 1e3);
            }
        }
    }
    let p50 = pct(native.clone(), 0.5);
    let p99 = pct(native.clone(), 0.99);
    let base = pct(spawn_true, 0.5);
    let proc50 = pct(proc_start.clone(), 0.5);
    let proc99 = pct(proc_start.clone(), 0.99);
    out.row(
        &format!(
            "`run --detach` → a process agent running (`date`), {} runs, same host, same minutes",
            proc_start.len()
        ),
        &format!("p50 {proc50:.2} ms, p99 {proc99:.2} ms"),
        "(baseline)",
    );
    out.row(
        &format!(
            "`run --detach` → first request at the mock (native), {} runs",
            native.len()
        ),
        &format!(
            "p50 {p50:.2} ms, p99 {p99:.2} ms ({:.2}× the process agent's start; a `true` spawn takes {base:.2} ms)",
            p50 / proc50
        ),
        "p50 ≤ 5 ms",
    );
    for (k, v) in [
        ("native_p50_ms", p50),
        ("native_p99_ms", p99),
        ("process_p50_ms", proc50),
        ("process_p99_ms", proc99),
        ("spawn_true_p50_ms", base),
    ] {
        out.set("start", k, v);
    }
    out.set("start", "samples", native.len());
}

/// A `dispatch worker` process on a fresh PostgreSQL database.
fn worker(dispatch: &Path, url: &str, state: &Path, slots: usize) -> Child {
    worker_trusting(dispatch, url, state, slots, None)
}

/// [`worker`], trusting the CA in `cacert` too (`DISPATCH_CACERT`).
fn worker_trusting(
    dispatch: &Path,
    url: &str,
    state: &Path,
    slots: usize,
    cacert: Option<&Path>,
) -> Child {
    let mut cmd = Command::new(dispatch);
    cmd.args([
        "worker",
        "--database-url",
        url,
        "--slots",
        &slots.to_string(),
        "--name",
        "bench",
    ])
    .env("DISPATCH_ROOT", state)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(ca) = cacert {
        cmd.env("DISPATCH_CACERT", ca);
    }
    cmd.spawn().expect("the worker starts")
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The concurrency agent in `root/name`: a native agent on the mock at
/// `base_url` with a LOCAL tool `lookup` (a shell script that prints one
/// line), its parcel built into `layout`; `extra` lines added to its
/// Agentfile.
fn tool_agent(root: &Path, name: &str, base_url: &str, extra: &str, layout: &Layout) -> PathBuf {
    let agent = agent_dir(
        root,
        name,
        &format!(
            "FROM agent\nNAME {name}\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {base_url}\n\
             TOOL LOCAL lookup.sh AS lookup DESCRIPTION \"Find an order\"\n{extra}"
        ),
    );
    // The mock's tool rounds call `lookup`: each runs this process.
    std::fs::write(agent.join("lookup.sh"), "echo 'order: shipped'\n").expect("tool");
    dispatch_core::parcel::build(&agent, &layout.parcels()).expect("parcel");
    agent
}

fn launch_request(name: &str) -> LaunchRequest {
    launch_request_with(name, json!("go"))
}

fn launch_request_with(name: &str, payload: serde_json::Value) -> LaunchRequest {
    LaunchRequest {
        source: name.into(),
        operation: None,
        payload,
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}

/// When the first attempt of any run began (its claim), in ms.
fn first_claim(rt: &tokio::runtime::Runtime, url: &str) -> Option<i64> {
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT min(started_at) FROM attempts", &[])
            .await
            .ok()?;
        row.get::<_, Option<i64>>(0)
    })
}

/// `runs` native runs of 3 rounds × 2 s on one worker.
fn concurrency(
    rt: &tokio::runtime::Runtime,
    dispatch: &Path,
    root: &Path,
    a: &Args,
    out: &mut Report,
) {
    let runs = a.runs;
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        out.row(
            &format!("{runs} concurrent native runs"),
            "skipped (PostgreSQL unreachable)",
            "",
        );
        return;
    };
    let mock = mock_on(
        rt,
        a.mock_port,
        script(json!({
            "steps": [], "record_bodies": false,
            "fallback": {"kind": "rounds", "tool_rounds": 2, "delay_ms": 2000, "text": "done"}
        })),
    );
    let state = root.join("concurrency");
    let layout = Layout::new(&state);
    tool_agent(root, "native-conc", &mock.base_url(), "", &layout);
    let store = rt
        .block_on(PgStore::connect(db.url(), 4))
        .expect("connects");
    let request = launch_request("native-conc");
    // `--queued`: every run is submitted before the worker starts, so the
    // execution is measured alone; else they are submitted while it runs.
    let submit = || {
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..runs {
                launch::create(&store, &layout, &request)
                    .await
                    .expect("created");
            }
        });
        t.elapsed().as_secs_f64()
    };
    let queued_before = a.queued.then(submit);
    let t0 = Instant::now();
    let mut w = worker(dispatch, db.url(), &state, runs);
    // Queued first, the worker's CPU counts from its start (its own start
    // included); else from when it is idle, before the first submission.
    if !a.queued {
        std::thread::sleep(Duration::from_millis(500));
    }
    let idle = rss_kb(w.id(), "VmRSS:");
    let idle_cpu = if a.queued { (0, 0) } else { cpu_ms(w.id()) };
    let t = if a.queued { t0 } else { Instant::now() };
    let watch = budget::Watch::connect(rt, db.url());
    let before = budget::Sample::now();
    let submitted = queued_before.unwrap_or_else(submit);
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kb(w.id(), "VmRSS:"));
        if watch.finished(rt) >= runs || t.elapsed() > Duration::from_secs(a.timeout) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t.elapsed().as_secs_f64();
    let spent = budget::Sample::now().since(before);
    let done = rt
        .block_on(store.list_runs(&RunFilter::default()))
        .unwrap_or_default();
    let first_created = done.iter().map(|r| r.created_at).min().unwrap_or(0);
    let rel = |f: &dyn Fn(&dispatch_store::Run) -> Option<i64>| {
        let v: Vec<f64> = done
            .iter()
            .filter_map(f)
            .map(|ms| (ms - first_created) as f64 / 1e3)
            .collect();
        (pct(v.clone(), 0.5), pct(v, 1.0))
    };
    let (s50, smax) = rel(&|r| r.state.started_at());
    let (e50, emax) = rel(&|r| r.state.ended_at());
    eprintln!(
        "started p50 {s50:.2}s max {smax:.2}s; ended p50 {e50:.2}s max {emax:.2}s (from the first create)"
    );
    let ok = done
        .iter()
        .filter(|r| r.status() == dispatch_core::Status::Succeeded)
        .count();
    let hwm = rss_kb(w.id(), "VmHWM:").max(peak);
    // The worker's own CPU (its tools' processes are not in it), before
    // it is killed; per model round: 3 calls a run.
    let (own, children) = cpu_ms(w.id());
    // Its spawner starts its tools' stages for it (not reaped while the
    // worker lives, so not in its children's time): counted as the
    // worker's own.
    let spawner_ms = spawner_cpu_ms(w.id());
    let cpu_ms = own.saturating_sub(idle_cpu.0) + spawner_ms;
    let children_ms = children.saturating_sub(idle_cpu.1);
    let _ = w.kill();
    let _ = w.wait();
    // Execution: from the first claim (else the first agent start) to the
    // last end.
    let first_start = first_claim(rt, db.url())
        .or_else(|| done.iter().filter_map(|r| r.state.started_at()).min());
    let last_end = done.iter().filter_map(|r| r.state.ended_at()).max();
    let exec = match (first_start, last_end) {
        (Some(s), Some(e)) => (e - s) as f64 / 1e3,
        _ => f64::NAN,
    };
    let how = if a.queued {
        "before the worker started"
    } else {
        "while the worker ran"
    };
    let rate = runs as f64 / submitted;
    let per_run_kb = hwm.saturating_sub(idle) as f64 / runs as f64;
    let rounds = runs * 3;
    out.row(
        &format!("submission: {runs} runs created one by one through the store, {how}"),
        &format!("all submitted in {submitted:.2} s ({rate:.0} runs/s)"),
        "",
    );
    out.row(
        "execution: first claim → last run ended",
        &format!("{exec:.2} s ({:.2}× the ideal 6 s)", exec / 6.0),
        "≤ 1.5×",
    );
    out.row(
        &format!("{runs} concurrent native runs, 3 calls × 2 s each, one worker: end to end"),
        &format!(
            "{ok}/{runs} succeeded in {wall:.2} s ({:.2}× the ideal 6 s)",
            wall / 6.0
        ),
        "all succeed",
    );
    out.row(
        "worker RSS during those runs",
        &format!(
            "peak {:.0} MB (idle {:.0} MB; {per_run_kb:.0} KB per run)",
            hwm as f64 / 1024.0,
            idle as f64 / 1024.0,
        ),
        "≤ 300 MB",
    );
    out.row(
        "worker CPU during those runs (its own and its spawner's, not its tools')",
        &format!(
            "{:.1} s; {:.2} ms per model round ({rounds} rounds; the spawner {:.2} s)",
            cpu_ms as f64 / 1e3,
            cpu_ms as f64 / rounds as f64,
            spawner_ms as f64 / 1e3,
        ),
        "≤ 1.5 ms per round",
    );
    out.row(
        "CPU of the worker's reaped children (tool processes and what starts them: forks or stages, the tools' `sh`)",
        &format!(
            "{:.1} s; {:.2} ms per model round",
            children_ms as f64 / 1e3,
            children_ms as f64 / rounds as f64,
        ),
        "",
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = cpu_ms + children_ms + spent.postgres_ms + spent.bench_ms;
    let rest = spent.machine_ms.saturating_sub(parts);
    let s = |ms: u64| ms as f64 / 1e3;
    let bench_does = match a.queued {
        true => "the mock model and the watch",
        false => "the mock model, the watch and the submission",
    };
    out.row(
        &format!("the machine's CPU over those {wall:.2} s ({cores} cores: {:.1} CPU s)", wall * cores as f64),
        &format!(
            "{:.1} CPU s ({:.0} % busy): the worker {:.1}, its tools' processes {:.1}, PostgreSQL {:.1}, the bench ({bench_does}) {:.1}, the rest {:.1}",
            s(spent.machine_ms),
            100.0 * s(spent.machine_ms) / (wall * cores as f64),
            s(cpu_ms),
            s(children_ms),
            s(spent.postgres_ms),
            s(spent.bench_ms),
            s(rest),
        ),
        "",
    );
    let c = "concurrency";
    out.set(c, "machine_cpu_ms", spent.machine_ms);
    out.set(c, "postgres_cpu_ms", spent.postgres_ms);
    out.set(c, "bench_cpu_ms", spent.bench_ms);
    out.set(c, "cores", cores);
    out.set(c, "runs", runs);
    out.set(c, "succeeded", ok);
    out.set(c, "queued_before_worker", a.queued);
    out.set(c, "submission_s", submitted);
    out.set(c, "submission_runs_per_s", rate);
    out.set(c, "execution_s", exec);
    out.set(c, "execution_x_ideal", exec / 6.0);
    out.set(c, "wall_s", wall);
    out.set(c, "peak_rss_kb", hwm);
    out.set(c, "idle_rss_kb", idle);
    out.set(c, "rss_kb_per_run", per_run_kb);
    out.set(c, "cpu_ms", cpu_ms);
    out.set(c, "cpu_ms_per_round", cpu_ms as f64 / rounds as f64);
    out.set(c, "children_cpu_ms", children_ms);
    out.set(c, "spawner_cpu_ms", spawner_ms);
    // Beside it, with the worker gone: the tools' processes alone.
    let tool = root.join("native-conc").join("lookup.sh");
    let tools = floor::tools(&tool, runs * 2, 2);
    floor::report(&tools, exec, out);
    let calls = model_floor::model_calls(rt, &mock.base_url(), runs);
    model_floor::report(&calls, tools.cpu_ms, out);
}

/// CPU of the spawners (`dispatch __spawner`) that are children of `pid`,
/// in milliseconds.
fn spawner_cpu_ms(pid: u32) -> u64 {
    budget::pids()
        .filter_map(budget::stat)
        .filter(|s| s.comm.starts_with("dispatch-spawn") && s.ppid == pid)
        .map(|s| s.own_ms)
        .sum()
}

/// User and system CPU time of process `pid` so far, and of its reaped
/// children (its tools' processes, all the way down), in milliseconds.
fn cpu_ms(pid: u32) -> (u64, u64) {
    budget::stat(pid).map_or((0, 0), |s| (s.own_ms, s.reaped_ms))
}

/// First token at the mock → the SSE client's `delta`.
fn sse_latency(
    rt: &tokio::runtime::Runtime,
    dispatch: &Path,
    root: &Path,
    a: &Args,
    out: &mut Report,
) {
    let (n, mock_port, server_port) = (a.sse, a.mock_port, a.server_port);
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        out.row(
            "first token → SSE client",
            "skipped (PostgreSQL unreachable)",
            "",
        );
        return;
    };
    let mock = mock_on(
        rt,
        mock_port,
        script(json!({
            "steps": [],
            "fallback": {"kind": "text", "text": "hello there, this is the answer", "chunks": 4, "first_token_delay_ms": 300}
        })),
    );
    let state = root.join("sse");
    let mut server = Command::new(dispatch)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{server_port}"),
            "--workers",
            "8",
            "--database-url",
            db.url(),
        ])
        .env("DISPATCH_ROOT", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server");
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || for _ in lines {});
    let host = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let agent = agent_dir(
        root,
        "native-sse",
        &format!(
            "FROM agent\nNAME native-sse\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n",
            mock.base_url()
        ),
    );
    let client = |args: &[&str]| {
        Command::new(dispatch)
            .args(args)
            .env("DISPATCH_HOST", &host)
            .env("DISPATCH_ROOT", root.join("sse-client"))
            .stderr(Stdio::null())
            .output()
            .expect("client")
    };
    let mut lat = Vec::new();
    for _ in 0..n {
        let out = client(&["run", agent.to_str().expect("utf-8"), "--detach"]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let before = mock.requests().len();
        let Ok(resp) = http::get(&format!("http://{host}/v1/runs/{id}/events")).call() else {
            continue;
        };
        let mut seen = None;
        for line in BufReader::new(resp.into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if line == "event: delta" {
                seen = Some(now_us());
                break;
            }
        }
        let sent = mock
            .requests()
            .get(before)
            .and_then(|r| r.first_token_sent_at_us);
        if let (Some(seen), Some(sent)) = (seen, sent) {
            lat.push(seen.saturating_sub(sent) as f64 / 1e3);
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let (p50, p99) = (pct(lat.clone(), 0.5), pct(lat.clone(), 0.99));
    out.row(
        &format!(
            "first token leaving the mock → SSE client, {} runs",
            lat.len()
        ),
        &format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        "p50 ≤ 10 ms",
    );
    out.set("sse", "samples", lat.len());
    out.set("sse", "p50_ms", p50);
    out.set("sse", "p99_ms", p99);
}
