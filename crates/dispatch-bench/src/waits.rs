//! `dispatch-bench waits [--dispatch PATH] [--database-url URL] [--suspended N]
//! [--latency K] [--waiters W]`: durable waits on PostgreSQL, against a real
//! `dispatch server` (no in-process workers) and one `dispatch worker`:
//!
//! - N runs suspended waiting for signals (stored as a worker suspends them):
//!   processes left (agents, children of the worker), the RSS of server and
//!   worker, and the CPU the server spends per second while they wait (its
//!   timer sweep looks at them every second).
//! - Signal → agent executing again: K real runs suspend (a shell agent);
//!   each gets `POST /v1/runs/{id}/signal`; the resumed agent writes the time
//!   it started. p50 / p95 / max.
//! - Remote `wait` on 1,000 suspended runs: W `dispatch wait --host` processes
//!   for 20 s once they have looked their runs up; requests per second the
//!   server answered meanwhile (its `/metrics`).

use dispatch_core::EventKind;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_core::{NewEvent, ProcRef, RunId, Transition, Wait, WaitFor, now_ms};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_server::client;
use dispatch_store::{PgStore, RunStore, StateWrite};
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;

use crate::flag_value;

pub fn main(dispatch: &Path, args: &[String]) {
    crate::use_database_url(args);
    let num = |flag: &str, default: usize| {
        flag_value(args, flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (suspended, latency, waiters) = (
        num("--suspended", 10_000),
        num("--latency", 200),
        num("--waiters", 20),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        eprintln!("waits: PostgreSQL is unreachable (start it, or pass --database-url)");
        std::process::exit(1);
    };
    let store = rt
        .block_on(PgStore::connect(db.url(), 4))
        .expect("connects");
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path().join(".dispatch"));
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    build_parcel(dir.path(), &layout, &marks);

    eprintln!("waits: storing {suspended} suspended runs…");
    let seeded = Instant::now();
    let ids: Vec<RunId> = (0..suspended)
        .map(|_| rt.block_on(suspend_one(&store, &layout)))
        .collect();
    eprintln!("waits: stored in {:.1}s", seeded.elapsed().as_secs_f64());

    let (mut server, host) = start_server(dispatch, db.url(), &layout);
    let mut worker = start_worker(dispatch, db.url(), &layout);
    std::thread::sleep(Duration::from_secs(3));
    let agents = processes_with_env("DISPATCH_RUN_ID=");
    let children = children_of(worker.id());
    let (server_rss, worker_rss) = (rss_kib(server.id()), rss_kib(worker.id()));
    let cpu0 = cpu_ticks(server.id());
    std::thread::sleep(Duration::from_secs(10));
    let server_cpu = (cpu_ticks(server.id()) - cpu0) as f64 / ticks_per_sec() / 10.0;

    eprintln!("waits: {latency} real runs suspend, then a signal each…");
    let (fresh, lat) = signal_latency(&rt, &store, &layout, &host, &marks, latency);

    eprintln!("waits: {waiters} remote waits on 1,000 suspended runs for 20 s…");
    let rps = remote_wait_rate(dispatch, &host, &ids[..ids.len().min(1000)], waiters);

    println!("| measure | value |");
    println!("|---|---|");
    println!("| runs suspended waiting for a signal | {suspended} |");
    println!("| agent processes of those runs | {agents} |");
    println!("| child processes of the worker | {children} |");
    println!(
        "| RSS: server / worker | {:.1} MiB / {:.1} MiB |",
        server_rss as f64 / 1024.0,
        worker_rss as f64 / 1024.0
    );
    println!(
        "| server CPU while they wait (timer sweep every 1 s) | {:.1} % of a core |",
        server_cpu * 100.0
    );
    println!(
        "| signal → agent executing again (n = {}) | p50 {:.1} ms · p95 {:.1} ms · max {:.1} ms |",
        lat.len(),
        pct(&lat, 0.50),
        pct(&lat, 0.95),
        pct(&lat, 1.0)
    );
    println!(
        "| baseline: `POST /v1/runs` → agent executing (n = {}) | p50 {:.1} ms · p95 {:.1} ms · max {:.1} ms |",
        fresh.len(),
        pct(&fresh, 0.50),
        pct(&fresh, 0.95),
        pct(&fresh, 1.0)
    );
    println!(
        "| signal p50 / baseline p50 | {:.2} |",
        pct(&lat, 0.50) / pct(&fresh, 0.50).max(0.001)
    );
    println!("| remote `wait` on 1,000 runs ({waiters} clients, 20 s) | {rps:.2} requests/s |");
    let _ = worker.kill();
    let _ = worker.wait();
    let _ = server.kill();
    let _ = server.wait();
}

fn build_parcel(dir: &Path, layout: &Layout, marks: &Path) {
    let src = dir.join("agent");
    std::fs::create_dir_all(&src).expect("agent dir");
    std::fs::write(
        src.join("Agentfile"),
        "FROM process\nNAME waiter\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
    )
    .expect("Agentfile");
    let script = format!(
        "if [ -n \"$DISPATCH_RESUME\" ]; then date +%s%N > '{m}'/\"$DISPATCH_RUN_ID\"; exit 0; fi\n\
         date +%s%N > '{m}'/\"$DISPATCH_RUN_ID.first\"\n\
         echo '{{\"type\":\"wait\",\"for\":\"signal\",\"name\":\"go\"}}' >> \"$DISPATCH_EVENTS\"\n",
        m = marks.display()
    );
    std::fs::write(src.join("agent.sh"), script).expect("agent.sh");
    dispatch_core::parcel::build(&src, &layout.parcels()).expect("the parcel builds");
}

fn request() -> LaunchRequest {
    LaunchRequest {
        source: "waiter".into(),
        operation: None,
        payload: json!({}),
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}

/// A run as a worker leaves it when its agent suspended: claimed, started,
/// suspended (the same writes, without the process).
async fn suspend_one(store: &PgStore, layout: &Layout) -> RunId {
    let (run, _) = launch::create(store, layout, &request())
        .await
        .expect("a run is created");
    let me = ProcRef {
        pid: std::process::id(),
        start_ticks: 0,
    };
    let at = now_ms();
    let steps = [
        Transition::Claim { helper: me, at },
        Transition::AgentStarted { agent: me, at },
        Transition::Suspend {
            wait: Wait {
                wait_for: WaitFor::Signal,
                name: "go".into(),
                until: None,
            },
            at,
        },
    ];
    let mut state = run.state.clone();
    let mut writes = Vec::new();
    for t in &steps {
        let next = state.apply(run.operation, t).expect("a legal step");
        let event = NewEvent::new(
            EventKind::State,
            run.attempt,
            at,
            json!({"from": state.status(), "to": next.status()}),
        );
        writes.push(StateWrite::new(next.clone(), event));
        state = next;
    }
    store
        .transitions(&run.id, run.version, &writes)
        .await
        .expect("the run suspends");
    run.id
}

fn start_server(dispatch: &Path, url: &str, layout: &Layout) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(dispatch)
        .args(["server", "--listen", "127.0.0.1:0", "--workers", "0"])
        .args(["--database-url", url])
        .env("DISPATCH_ROOT", layout.root())
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a line").expect("a line");
    let host = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the address")
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{host}"))
}

fn start_worker(dispatch: &Path, url: &str, layout: &Layout) -> Child {
    Command::new(dispatch)
        .args(["worker", "--database-url", url, "--slots", "4"])
        .env("DISPATCH_ROOT", layout.root())
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

fn signal_latency(
    rt: &tokio::runtime::Runtime,
    store: &PgStore,
    layout: &Layout,
    host: &str,
    marks: &Path,
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    // Baseline, same worker and agent: `POST /v1/runs` → the agent's first start.
    let mut fresh = Vec::new();
    let ids: Vec<RunId> = (0..k)
        .map(|_| {
            let sent = epoch_ns();
            let answer = client::request(
                host,
                "POST",
                "/v1/runs",
                &[("content-type", "application/json")],
                Some(br#"{"parcel": "waiter"}"#),
            )
            .expect("the server answers");
            assert_eq!(answer.status, 201, "create answered {}", answer.status);
            let run: serde_json::Value =
                serde_json::from_str(&answer.text().expect("text")).expect("JSON");
            let id: RunId = run["id"].as_str().expect("an id").parse().expect("an id");
            let first = marks.join(format!("{id}.first"));
            fresh.push(mark_after(&first, sent));
            id
        })
        .collect();
    let _ = (layout, rt);
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let run = rt.block_on(store.get_run(id)).expect("reads");
            if matches!(run.state, dispatch_core::RunState::Suspended { .. }) {
                break;
            }
            assert!(Instant::now() < deadline, "run {id} never suspended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut lat = Vec::new();
    for id in &ids {
        let body = json!({"name": "go", "value": 1}).to_string();
        let sent = epoch_ns();
        let answer = client::request(
            host,
            "POST",
            &format!("/v1/runs/{id}/signal"),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("the server answers");
        assert_eq!(answer.status, 200, "signal answered {}", answer.status);
        lat.push(mark_after(&marks.join(id.as_str()), sent));
    }
    (fresh, lat)
}

/// Milliseconds from `sent` (ns since the epoch) to the time the agent wrote
/// into `mark`, once it has.
fn mark_after(mark: &Path, sent: u128) -> f64 {
    let until = Instant::now() + Duration::from_secs(30);
    let started = loop {
        if let Some(ns) = std::fs::read_to_string(mark)
            .ok()
            .and_then(|t| t.trim().parse::<u128>().ok())
        {
            break ns;
        }
        assert!(Instant::now() < until, "{} never appeared", mark.display());
        std::thread::sleep(Duration::from_micros(200));
    };
    started.saturating_sub(sent) as f64 / 1e6
}

fn remote_wait_rate(dispatch: &Path, host: &str, ids: &[RunId], waiters: usize) -> f64 {
    let chunk = ids.len().div_ceil(waiters.max(1)).max(1);
    let mut children: Vec<Child> = ids
        .chunks(chunk)
        .map(|part| {
            Command::new(dispatch)
                .arg("wait")
                .args(part.iter().map(RunId::as_str))
                .args(["--host", host])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a waiter starts")
        })
        .collect();
    // Each client first looks up its ids (a request each); then it waits.
    std::thread::sleep(Duration::from_secs(5));
    let before = requests(host);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let after = requests(host);
    let secs = started.elapsed().as_secs_f64();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    // The two /metrics reads are requests too.
    (after - before - 1.0).max(0.0) / secs
}

/// `dispatch_http_requests_total`, summed over its labels.
fn requests(host: &str) -> f64 {
    let answer = client::request(host, "GET", "/metrics", &[], None).expect("metrics");
    let text = answer.text().expect("text");
    text.lines()
        .filter(|l| l.starts_with("dispatch_http_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

fn pct(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn processes_with_env(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("environ"))
                        .is_ok_and(|env| String::from_utf8_lossy(&env).contains(needle))
                })
                .count()
        })
        .unwrap_or(0)
}

fn stat_fields(pid: u32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rfind(')').map_or("", |i| &s[i + 1..]);
    after.split_whitespace().map(str::to_string).collect()
}

fn children_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| {
                    stat_fields(*p)
                        .get(1)
                        .is_some_and(|pp| pp == &pid.to_string())
                })
                .count()
        })
        .unwrap_or(0)
}

/// utime + stime (fields 14 and 15; 12 and 13 after the command).
fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(pid);
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// USER_HZ: 100 on every Linux this runs on (x86_64, aarch64).
fn ticks_per_sec() -> f64 {
    100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
