//! `dispatch-bench ui [--dispatch PATH] [--runs N] [--events N] [--log-mb N] [--n N]`:
//! the dashboard over a seeded local store, served by `dispatch ui`.
//!
//! - The runs page's first screen over N runs (default 100,000): server time
//!   of `GET /ui/runs` (request to last byte, on loopback), against the same
//!   page of the API (`GET /v1/runs?limit=50`) measured in the same minutes.
//! - A run with 10,000 events and a 50 MB log: `GET /ui/runs/{id}`, against
//!   `GET /v1/runs/{id}/events?format=json` (the same events as JSON).
//! - In headless Chromium (when chromium and chromedriver are installed):
//!   both pages' navigation timing — response end, DOMContentLoaded, first
//!   contentful paint — from `performance.getEntriesByType`.

use dispatch_core::EventKind;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_core::{NewEvent, Operation, RunId, now_ms};
use dispatch_runtime::Layout;
use dispatch_server::client;
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{EventStore, NewRun, RunStore};
use serde_json::{Value, json};

use crate::flag_value;

pub fn main(dispatch: &Path, args: &[String]) {
    let num = |flag: &str, default: usize| {
        flag_value(args, flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (runs, events, log_mb, n) = (
        num("--runs", 100_000),
        num("--events", 10_000),
        num("--log-mb", 50),
        num("--n", 30),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path().join(".dispatch"));
    std::fs::create_dir_all(layout.root()).expect("state dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let big = rt.block_on(seed(&layout, runs, events));
    write_log(&layout.log(&big), log_mb);
    eprintln!(
        "ui: seeded {runs} runs, one with {events} events and a {log_mb} MB log, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (mut server, base) = start_ui(dispatch, &layout);
    let page = |path: &str| time_get(&base, path, n);
    println!("| what | p50 | p95 | bytes |");
    println!("|---|---|---|---|");
    let rows = [
        (
            "`GET /v1/runs?limit=50` (baseline: the API's same page)",
            "/v1/runs?limit=50".to_string(),
        ),
        (
            "`GET /ui/runs` (first screen, 50 runs)",
            "/ui/runs".to_string(),
        ),
        (
            "`GET /ui/runs?status=failed` (a filter)",
            "/ui/runs?status=failed".to_string(),
        ),
        (
            "`GET /v1/runs/{id}/events?format=json` (baseline: the big run's events)",
            format!("/v1/runs/{big}/events?format=json"),
        ),
        (
            "`GET /ui/runs/{id}` (10,000 events, log tail of 50 MB)",
            format!("/ui/runs/{big}"),
        ),
    ];
    let mut medians = Vec::new();
    for (what, path) in &rows {
        let (p50, p95, bytes) = page(path);
        medians.push(p50);
        println!("| {what} | {p50:.1} ms | {p95:.1} ms | {bytes} |");
    }
    println!(
        "\nratios: runs page / API page {:.2}; run page / its events as JSON {:.2}",
        medians[1] / medians[0],
        medians[4] / medians[3]
    );
    match browser_timings(
        &base,
        &[
            ("/ui/runs", "/ui/runs".to_string()),
            ("/ui/runs/{id}", format!("/ui/runs/{big}")),
        ],
    ) {
        Ok(lines) => {
            println!(
                "\n| in headless Chromium | response end | DOMContentLoaded | first contentful paint |"
            );
            println!("|---|---|---|---|");
            for l in lines {
                println!("{l}");
            }
        }
        Err(e) => eprintln!("ui: no browser timings: {e}"),
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
}

/// `runs` finished runs over 20 parcels with usage, and one more with
/// `events` events; returns that one's id.
async fn seed(layout: &Layout, runs: usize, events: usize) -> RunId {
    let store = SqliteStore::open(&layout.db(), Duration::from_secs(5)).expect("open store");
    let t0 = now_ms() - runs as i64 * 1000;
    let mut ids = Vec::with_capacity(runs);
    for i in 0..runs {
        let mut new = new_run(&format!("parcel-{}", i % 20), t0 + i as i64 * 1000);
        new.id = RunId::new();
        ids.push(new.id.clone());
        store.create_run(&new).await.expect("create");
    }
    // Usage on a tenth of them (the rest stay queued: a table shows them the same way).
    for id in ids.iter().step_by(10) {
        let event = NewEvent::new(
            EventKind::Usage,
            1,
            now_ms(),
            json!({"model": "m", "input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.0123}),
        );
        store.append_events(id, &[event]).await.expect("usage");
    }
    let big = new_run("big", now_ms());
    let id = big.id.clone();
    store.create_run(&big).await.expect("create");
    let mut batch = Vec::new();
    for i in 0..events {
        let kind = ["step", "tool_call", "log", "usage"][i % 4];
        let data = match kind {
            "step" => json!({"name": format!("step-{}", i / 40), "phase": "start"}),
            "tool_call" => {
                json!({"name": "search", "input": {"q": i}, "output": "x".repeat(200), "ok": true, "duration_ms": 5})
            }
            "usage" => {
                json!({"model": "m", "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.0001})
            }
            _ => json!({"line": format!("line {i}")}),
        };
        batch.push(NewEvent::new(kind, 1, now_ms() + i as i64, data));
        if batch.len() == 500 {
            store.append_events(&id, &batch).await.expect("events");
            batch.clear();
        }
    }
    store.append_events(&id, &batch).await.expect("events");
    id
}

fn new_run(parcel: &str, created_at: i64) -> NewRun {
    NewRun {
        id: RunId::new(),
        parcel_digest: "0".repeat(64),
        parcel_name: parcel.into(),
        operation: Operation::Job,
        parent_id: None,
        origin_id: None,
        payload: json!({}),
        brief_sha256: "0".repeat(64),
        created_at,
        claimed_by: None,
        created: false,
        trigger: dispatch_core::Trigger::Manual,
        handoff_key: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}

fn write_log(path: &Path, mb: usize) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("runs dir");
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("log"));
    let line = format!(
        "{}\n",
        "a log line of about one hundred bytes, written by the agent ".repeat(2)
    );
    let mut written = 0;
    while written < mb << 20 {
        f.write_all(line.as_bytes()).expect("write");
        written += line.len();
    }
}

fn start_ui(dispatch: &Path, layout: &Layout) -> (Child, String) {
    let mut child = Command::new(dispatch)
        .args(["ui", "--port", "0", "--workers", "0"])
        .env("DISPATCH_ROOT", layout.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dispatch ui starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the URL");
    let base = line.trim().trim_end_matches("/ui/").to_string();
    (child, base)
}

/// p50 and p95 in ms of `n` GETs of `path` (after one warm-up), and the size.
fn time_get(base: &str, path: &str, n: usize) -> (f64, f64, usize) {
    let get = || {
        let r = client::request(base, "GET", path, &[], None).expect("answers");
        assert_eq!(r.status, 200, "GET {path}");
        r.text().expect("body").len()
    };
    let bytes = get();
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            get();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (
        ms[ms.len() / 2],
        ms[(ms.len() * 95 / 100).min(ms.len() - 1)],
        bytes,
    )
}

/// Each page's navigation timing in headless Chromium (median of 5 loads).
fn browser_timings(base: &str, paths: &[(&str, String)]) -> Result<Vec<String>, String> {
    let driver = which("chromedriver").ok_or("chromedriver is not installed")?;
    let chromium = which("chromium").ok_or("chromium is not installed")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let wd = format!("http://127.0.0.1:{port}");
    let call = |method: &str, path: &str, body: Option<Value>| -> Result<Value, String> {
        let body = body.map(|b| b.to_string());
        let r = client::request(
            &wd,
            method,
            path,
            &[("content-type", "application/json")],
            body.as_deref().map(str::as_bytes),
        )
        .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&r.text().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(v["value"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while call("GET", "/status", None).map_or(true, |v| v["ready"] != true) {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("chromedriver did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
        "goog:chromeOptions": {"binary": chromium, "args": ["--headless=new", "--no-sandbox",
            "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]}}}});
    let result = (|| {
        let session = call("POST", "/session", Some(caps))?["sessionId"]
            .as_str()
            .ok_or("no session")?
            .to_string();
        let mut lines = Vec::new();
        for (label, path) in paths {
            let mut samples: Vec<[f64; 3]> = Vec::new();
            for _ in 0..6 {
                call(
                    "POST",
                    &format!("/session/{session}/url"),
                    Some(json!({"url": format!("{base}{path}")})),
                )?;
                let v = call(
                    "POST",
                    &format!("/session/{session}/execute/sync"),
                    Some(json!({
                    "script": "const n = performance.getEntriesByType('navigation')[0]; \
                               const p = performance.getEntriesByName('first-contentful-paint')[0]; \
                               return [n.responseEnd, n.domContentLoadedEventEnd, p ? p.startTime : -1];",
                    "args": []})),
                )?;
                let f = |i: usize| v[i].as_f64().unwrap_or(-1.0);
                samples.push([f(0), f(1), f(2)]);
            }
            samples.remove(0); // the first load warms the caches
            let median = |i: usize| {
                let mut xs: Vec<f64> = samples.iter().map(|s| s[i]).collect();
                xs.sort_by(f64::total_cmp);
                xs[xs.len() / 2]
            };
            lines.push(format!(
                "| `{label}` | {:.0} ms | {:.0} ms | {:.0} ms |",
                median(0),
                median(1),
                median(2)
            ));
        }
        let _ = call("DELETE", &format!("/session/{session}"), None);
        Ok(lines)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Where `program` is on `PATH`, if it is.
pub(crate) fn which(program: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().to_string())
    })
}
