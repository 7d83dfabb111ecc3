//! `dispatch-bench native [OPTIONS]` (`--help` lists them): the native
//! agent courier's targets,
//! against the release binary and the scripted mock model server
//! (`dispatch_test_support::mock`) on loopback.
//!
//! - Start: `dispatch run --detach` of a native agent → the mock receives its
//!   first request (p50, p99), beside the cost of spawning `true` and of a
//!   `FROM process` agent's start (`run --detach` → its first line).
//! - Concurrency: `--runs` (default 1,000) native runs queued on PostgreSQL,
//!   one `dispatch worker` process with as many slots; every model call takes
//!   2 s at the mock and each run makes 3 (two tool rounds, then the answer):
//!   wall time against the ideal 6 s, and the worker's peak RSS (per run).
//! - SSE: a `dispatch server` (PostgreSQL, in-process workers) and an SSE
//!   client on `GET /v1/runs/{id}/events`: from the mock writing a run's first
//!   token to the client reading its `delta` event (p50, p99).
//! - `--python`: the same 3-round loop as a Python process agent using the
//!   `openai` package (installed into a venv under the bench directory),
//!   pointed at the same mock: start cost and memory per run, as ratios.

use dispatch_test_support::http;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::{PgStore, RunFilter, RunStore};
use dispatch_test_support::mock::{MockServer, Script};
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn script(value: serde_json::Value) -> Script {
    serde_json::from_value(value).expect("a valid mock script")
}

fn agent_dir(root: &Path, name: &str, body: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("agent dir");
    std::fs::write(dir.join("Agentfile"), body).expect("Agentfile");
    dir
}

/// `dispatch-bench native`: the native agent courier's targets.
#[derive(clap::Parser, Debug)]
#[command(
    name = "dispatch-bench native",
    about = "The native agent courier's targets: start, concurrency with a LOCAL tool (CPU per model round), SSE latency",
    after_help = "Examples:\n  dispatch-bench native --dispatch target/release/dispatch --only concurrency --runs 300\n  dispatch-bench native --only start --latency 100 --mock-port 18080"
)]
struct Args {
    /// The `dispatch` binary to measure.
    #[arg(long, default_value = "target/release/dispatch")]
    dispatch: PathBuf,
    /// PostgreSQL server for the throwaway databases (one per measurement).
    #[arg(long, env = "DISPATCH_TEST_PG")]
    database_url: Option<String>,
    /// Native runs in the concurrency measurement (one worker, as many slots).
    #[arg(long, default_value_t = 1_000)]
    runs: usize,
    /// Samples of the start measurement.
    #[arg(long, default_value_t = 200)]
    latency: usize,
    /// Samples of the SSE measurement.
    #[arg(long, default_value_t = 50)]
    sse: usize,
    /// Only one measurement.
    #[arg(long, value_parser = ["start", "concurrency", "sse"])]
    only: Option<String>,
    /// Port of the scripted mock model on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    mock_port: u16,
    /// Port of the `dispatch server` of the SSE measurement (0: any free port).
    #[arg(long, default_value_t = 0)]
    server_port: u16,
    /// Seconds the concurrency measurement waits for its runs to end.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Submit every run of the concurrency measurement before the worker
    /// starts (else while it runs).
    #[arg(long)]
    queued: bool,
    /// Also the same loop as a Python `openai` process agent.
    #[arg(long)]
    python: bool,
}

/// Where the mock model listens.
fn mock_on(rt: &tokio::runtime::Runtime, port: u16, s: Script) -> MockServer {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match rt.block_on(MockServer::start_on(addr, s)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "dispatch-bench native: cannot listen on {addr}: {e} (choose another --mock-port, or 0)"
            );
            std::process::exit(2);
        }
    }
}

pub fn main(args: &[String]) {
    use clap::Parser;
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
    let wanted = |what: &str| a.only.as_deref().is_none_or(|o| o == what);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    println!("| measurement | result | target |\n|---|---|---|");
    if wanted("start") {
        start(&rt, dispatch, dir.path(), a.latency, a.mock_port);
    }
    if wanted("concurrency") {
        concurrency(&rt, dispatch, dir.path(), &a);
    }
    if wanted("sse") {
        sse_latency(&rt, dispatch, dir.path(), a.sse, a.mock_port, a.server_port);
    }
    if a.python {
        python_side_by_side(&rt, dispatch, dir.path());
    }
}

/// `run --detach` → the mock's first request.
fn start(rt: &tokio::runtime::Runtime, dispatch: &Path, root: &Path, n: usize, port: u16) {
    let mock = mock_on(
        rt,
        port,
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
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            let reqs = mock.requests();
            if reqs.len() > before {
                break reqs.get(before).map(|r| r.received_at_us);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
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
    let base = pct(spawn_true, 0.5);
    let proc50 = pct(proc_start.clone(), 0.5);
    println!(
        "| `run --detach` → a process agent running (`date`), {} runs, same host, same minutes | p50 {proc50:.2} ms, p99 {:.2} ms | (baseline) |",
        proc_start.len(),
        pct(proc_start, 0.99)
    );
    println!(
        "| `run --detach` → first request at the mock (native), {} runs | p50 {p50:.2} ms, p99 {:.2} ms ({:.2}× the process agent's start; a `true` spawn takes {base:.2} ms) | p50 ≤ 5 ms |",
        native.len(),
        pct(native, 0.99),
        p50 / proc50
    );
}

/// A `dispatch worker` process on a fresh PostgreSQL database.
fn worker(dispatch: &Path, url: &str, state: &Path, slots: usize) -> Child {
    Command::new(dispatch)
        .args([
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
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
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

/// `runs` native runs of 3 rounds × 2 s on one worker.
fn concurrency(rt: &tokio::runtime::Runtime, dispatch: &Path, root: &Path, a: &Args) {
    let runs = a.runs;
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        println!("| {runs} concurrent native runs | skipped (PostgreSQL unreachable) | |");
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
    let agent = agent_dir(
        root,
        "native-conc",
        &format!(
            "FROM agent\nNAME native-conc\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             TOOL LOCAL lookup.sh AS lookup DESCRIPTION \"Find an order\"\n",
            mock.base_url()
        ),
    );
    // The mock's two tool rounds call `lookup`: each runs this process
    // (before, the agent had no tool and each call was answered "there is
    // no tool named lookup").
    std::fs::write(agent.join("lookup.sh"), "echo 'order: shipped'\n").expect("tool");
    dispatch_core::parcel::build(&agent, &layout.parcels()).expect("parcel");
    let store = rt
        .block_on(PgStore::connect(db.url(), 4))
        .expect("connects");
    let request = LaunchRequest {
        source: "native-conc".into(),
        operation: None,
        payload: json!("go"),
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
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
    let submitted = queued_before.unwrap_or_else(submit);
    let mut peak = 0;
    let done = loop {
        peak = peak.max(rss_kb(w.id(), "VmRSS:"));
        let filter = RunFilter::default();
        let all = rt.block_on(store.list_runs(&filter)).unwrap_or_default();
        let finished = all.iter().filter(|r| r.state.is_terminal()).count();
        if finished >= runs || t.elapsed() > Duration::from_secs(a.timeout) {
            break all;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = t.elapsed().as_secs_f64();
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
    let cpu_ms = own.saturating_sub(idle_cpu.0);
    let children_ms = children.saturating_sub(idle_cpu.1);
    let _ = w.kill();
    let _ = w.wait();
    let first_start = done.iter().filter_map(|r| r.state.started_at()).min();
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
    println!(
        "| submission: {runs} runs created one by one through the store, {how} | {submitted:.2} s ({:.0} runs/s) | |",
        runs as f64 / submitted
    );
    println!(
        "| execution: first run started → last run ended | {exec:.2} s ({:.2}× the ideal 6 s) | ≤ 1.5× |",
        exec / 6.0
    );
    println!(
        "| {runs} concurrent native runs, 3 calls × 2 s each, one worker: end to end | {ok}/{runs} succeeded in {wall:.2} s ({:.2}× the ideal 6 s) | all succeed |",
        wall / 6.0
    );
    println!(
        "| worker RSS during those runs | peak {:.0} MB (idle {:.0} MB; {:.0} KB per run) | ≤ 300 MB |",
        hwm as f64 / 1024.0,
        idle as f64 / 1024.0,
        hwm.saturating_sub(idle) as f64 / runs as f64
    );
    println!(
        "| worker CPU during those runs (its own, not its tools') | {:.1} s; {:.2} ms per model round ({} rounds) | ≤ 1.5 ms per round |",
        cpu_ms as f64 / 1e3,
        cpu_ms as f64 / (runs * 3) as f64,
        runs * 3
    );
    println!(
        "| CPU of the worker's reaped children (tool processes and what starts them: forks or stages, the tools' `sh`) | {:.1} s; {:.2} ms per model round | |",
        children_ms as f64 / 1e3,
        children_ms as f64 / (runs * 3) as f64,
    );
}

/// User and system CPU time of process `pid` so far, and of its reaped
/// children (its tools' processes, all the way down), in milliseconds.
fn cpu_ms(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime are fields 14 to 17; `rest` starts at
    // field 3.
    let at = |i: usize| f.get(i).copied().unwrap_or(0) * 10;
    (at(11) + at(12), at(13) + at(14))
}

/// First token at the mock → the SSE client's `delta`.
fn sse_latency(
    rt: &tokio::runtime::Runtime,
    dispatch: &Path,
    root: &Path,
    n: usize,
    mock_port: u16,
    server_port: u16,
) {
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        println!("| first token → SSE client | skipped (PostgreSQL unreachable) | |");
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
    println!(
        "| first token leaving the mock → SSE client, {} runs | p50 {:.2} ms, p99 {:.2} ms | p50 ≤ 10 ms |",
        lat.len(),
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    );
}

const PY_AGENT: &str = r#"import os, json, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["LLM_BASE_URL"], api_key="unused")
messages = [{"role": "user", "content": "go"}]
for _ in range(3):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=False)
    m = r.choices[0].message
    if not m.tool_calls:
        break
    messages.append({"role": "assistant", "content": m.content, "tool_calls": [t.model_dump() for t in m.tool_calls]})
    for t in m.tool_calls:
        messages.append({"role": "tool", "tool_call_id": t.id, "content": "none"})
print(m.content)
"#;

/// The same loop as a Python process agent with the `openai` package.
fn python_side_by_side(rt: &tokio::runtime::Runtime, dispatch: &Path, root: &Path) {
    let venv = root.join("venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", venv.to_str().expect("utf-8")])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "openai"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            println!(
                "| Python `openai` agent | skipped (could not install the openai package) | |"
            );
            return;
        }
    }
    let mock = rt
        .block_on(MockServer::start(script(json!({
            "steps": [], "record_bodies": false,
            "fallback": {"kind": "rounds", "tool_rounds": 2, "delay_ms": 1000, "text": "done"}
        }))))
        .expect("mock");
    let state = root.join("python");
    let pyagent = agent_dir(
        root,
        "py-agent",
        &format!(
            "FROM process\nNAME py-agent\nCOPY agent.py\nCOMMAND [\"{}\", \"agent.py\"]\nENV LLM_BASE_URL={}\n",
            py.display(),
            mock.base_url()
        ),
    );
    std::fs::write(pyagent.join("agent.py"), PY_AGENT).expect("agent.py");
    let native = agent_dir(
        root,
        "native-py",
        &format!(
            "FROM agent\nNAME native-py\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n",
            mock.base_url()
        ),
    );
    let measure = |dir: &Path| {
        let mut starts = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..10 {
            let before = mock.requests().len();
            let t0 = now_us();
            let out = Command::new(dispatch)
                .args(["run", dir.to_str().expect("utf-8"), "--detach"])
                .env("DISPATCH_ROOT", &state)
                .stderr(Stdio::null())
                .output()
                .expect("run");
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let deadline = Instant::now() + Duration::from_secs(20);
            while mock.requests().len() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(500));
            }
            if let Some(r) = mock.requests().get(before) {
                starts.push(r.received_at_us.saturating_sub(t0) as f64 / 1e3);
            }
            // The process that holds the loop: the agent's group (Python) or the helper (native).
            let doc = Command::new(dispatch)
                .args(["inspect-run", &id, "--format", "json"])
                .env("DISPATCH_ROOT", &state)
                .output()
                .expect("inspect");
            let v: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap_or_default();
            if let Some(pid) = v[0]["state"]["agent"]["pid"].as_u64() {
                std::thread::sleep(Duration::from_millis(300));
                rss.push(rss_kb(pid as u32, "VmRSS:") as f64 / 1024.0);
            }
            let _ = Command::new(dispatch)
                .args(["wait", &id])
                .env("DISPATCH_ROOT", &state)
                .stdout(Stdio::null())
                .status();
        }
        (pct(starts, 0.5), pct(rss, 0.5))
    };
    let (py_start, py_rss) = measure(&pyagent);
    let (n_start, n_rss) = measure(&native);
    println!(
        "| start → first request: Python `openai` agent vs native | {py_start:.1} ms vs {n_start:.2} ms ({:.0}× sooner) | — |",
        py_start / n_start
    );
    println!(
        "| memory of the process holding the loop: Python agent vs native run's helper (the whole helper: SQLite, runtime, HTTP client) | {py_rss:.1} MB vs {n_rss:.1} MB ({:.1}× less; in a worker a native run adds ~0.1 MB, see above) | — |",
        py_rss / n_rss
    );
}
