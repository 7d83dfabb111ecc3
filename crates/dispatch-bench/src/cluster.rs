//! `dispatch-bench cluster`: the cluster's targets, in process.
//!
//! - Throughput: `--runs` noop runs are queued first; then two workers (each
//!   with its own connections, claims of `--batch`, default 512) drain the
//!   queue; the rate is runs / time until the last one succeeded.
//! - Process throughput: `--process-runs` (default 5,000) runs of a
//!   `FROM process` parcel whose COMMAND is `true` are queued first; then two
//!   workers with `--slots` slots each (default 32) drain the queue, each run
//!   spawning its agent, supervising it and recording it like any other. On
//!   PostgreSQL each worker has a thread and a single-threaded runtime of its
//!   own, as two `dispatch worker` processes would; on SQLite they share one,
//!   as the workers of one `dispatch server` do (and the noop measurement's).
//! - Latency: `--latency` runs posted one at a time to a server (4 worker
//!   slots) on an ephemeral port; from just before the POST to the `running`
//!   state event's timestamp (millisecond resolution).
//!
//! `--only noop|process|latency` runs one of the three, `--store sqlite|postgres`
//! on one store (for profiling).
//!
//! PostgreSQL: `--database-url` (default `postgres://postgres@127.0.0.1:5432/test`,
//! where a throwaway database is created and dropped).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_core::{Status, now_ms};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_server::client;
use dispatch_server::metrics::Metrics;
use dispatch_server::serve::{Backend, Server};
use dispatch_server::worker::{Worker, WorkerConfig};
use dispatch_store::RunFilter;
use dispatch_test_support::testdb::TestDatabase;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::cpu::Cpu;

pub fn main(args: &[String]) {
    let value = |flag: &str| crate::flag_value(args, flag);
    crate::use_database_url(args);
    let runs: usize = value("--runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let latency: usize = value("--latency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let batch: usize = value("--batch").and_then(|v| v.parse().ok()).unwrap_or(512);
    let process_runs: usize = value("--process-runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let slots: usize = value("--slots").and_then(|v| v.parse().ok()).unwrap_or(32);
    let only = value("--only");
    let wanted = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let on = value("--store");
    let sqlite_too = on.as_deref().is_none_or(|s| s == "sqlite");
    let pg_too = on.as_deref().is_none_or(|s| s == "postgres");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| measurement | result | target |\n|---|---|---|");
    rt.block_on(async {
        let mut keep = Vec::new();
        if wanted("noop") {
            let noop = Load::noop(batch);
            if sqlite_too {
                let (sqlite, dir) = throughput(None, runs, &noop, false).await;
                keep.push(dir);
                println!(
                    "| noop throughput, SQLite, {runs} runs | {sqlite:.0} runs/s | ≥ 20000 runs/s |"
                );
            }
            match TestDatabase::create().await.filter(|_| pg_too) {
                Some(db) => {
                    let (pg, dir) =
                        throughput(Some(db.url().to_string()), runs, &noop, false).await;
                    keep.push(dir);
                    println!(
                        "| noop throughput, PostgreSQL, {runs} runs | {pg:.0} runs/s | ≥ 15000 runs/s |"
                    );
                }
                None => println!("| noop throughput, PostgreSQL | skipped (unreachable) | |"),
            }
        }
        if wanted("process") {
            let n = process_runs;
            let process = Load::process(slots);
            if sqlite_too {
                let (sqlite, dir) = throughput(None, n, &process, false).await;
                keep.push(dir);
                println!(
                    "| `true` process throughput, SQLite, {n} runs, 2 workers × {slots} slots | {sqlite:.0} runs/s | — |"
                );
            }
            match TestDatabase::create().await.filter(|_| pg_too) {
                Some(db) => {
                    let (pg, dir) =
                        throughput(Some(db.url().to_string()), n, &process, true).await;
                    keep.push(dir);
                    println!(
                        "| `true` process throughput, PostgreSQL, {n} runs, 2 workers × {slots} slots | {pg:.0} runs/s | ≥ 1000 runs/s |"
                    );
                }
                None => println!("| process throughput, PostgreSQL | skipped (unreachable) | |"),
            }
        }
        if wanted("latency") {
            let (p50, p99) = post_to_start(None, latency).await;
            println!("| POST → agent start, SQLite, {latency} runs | p50 {p50} ms, p99 {p99} ms | p50 ≤ 5 ms |");
            if let Some(db) = TestDatabase::create().await {
                let (p50, p99) = post_to_start(Some(db.url().to_string()), latency).await;
                println!(
                    "| POST → agent start, PostgreSQL, {latency} runs | p50 {p50} ms, p99 {p99} ms | p50 ≤ 5 ms, p99 ≤ 25 ms |"
                );
            }
        }
    });
}

/// What a throughput measurement queues and how the workers take it.
pub(crate) struct Load {
    agentfile: &'static str,
    slots: usize,
    batch: usize,
    /// How often the end is looked for (each look is a query).
    poll: Duration,
}

impl Load {
    /// Noop runs: a claim of `batch` finishes in one transaction.
    pub(crate) fn noop(batch: usize) -> Self {
        Load {
            agentfile: "FROM noop\nNAME bench\n",
            slots: batch * 2,
            batch,
            poll: Duration::from_millis(5),
        }
    }

    /// Runs that spawn `true`, `slots` at a time per worker.
    fn process(slots: usize) -> Self {
        Load {
            agentfile: "FROM process\nNAME bench\nCOMMAND [\"true\"]\n",
            slots,
            batch: slots,
            poll: Duration::from_millis(20),
        }
    }
}

fn noop_layout(dir: &tempfile::TempDir) -> Layout {
    bench_layout(dir, "FROM noop\nNAME bench\n")
}

fn bench_layout(dir: &tempfile::TempDir, agentfile: &str) -> Layout {
    let layout = Layout::new(dir.path().join(".dispatch"));
    let src = dir.path().join("bench");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("Agentfile"), agentfile).expect("Agentfile");
    dispatch_core::parcel::build(&src, &layout.parcels()).expect("parcel builds");
    layout
}

/// Runs `n` runs of `load` through two workers (`own_threads`: each on a
/// thread of its own); the rate, and the temporary
/// directory (kept until every measurement is done: deleting tens of
/// thousands of files makes the next ones' file creation slower on ext4).
pub(crate) async fn throughput(
    url: Option<String>,
    n: usize,
    load: &Load,
    own_threads: bool,
) -> (f64, tempfile::TempDir) {
    traced_throughput(url, n, load, own_threads, None).await
}

/// As [`throughput`], with the workers exporting each finished run's trace
/// to `traces` (an OTLP/HTTP traces URL) when given.
pub(crate) async fn traced_throughput(
    url: Option<String>,
    n: usize,
    load: &Load,
    own_threads: bool,
    traces: Option<String>,
) -> (f64, tempfile::TempDir) {
    let database = url
        .as_deref()
        .and_then(|u| u.rsplit_once('/'))
        .map(|(_, db)| db.to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = bench_layout(&dir, load.agentfile);
    let creator = Backend::open(&layout, url.as_deref(), 8)
        .await
        .expect("store opens");
    let request = LaunchRequest {
        source: "bench".into(),
        operation: None,
        payload: json!({}),
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
    for _ in 0..n {
        launch::create(&*creator.store, &layout, &request)
            .await
            .expect("create");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu = Cpu::now(database.as_deref());
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..2 {
        let mut config = WorkerConfig::new(layout.clone());
        config.name = format!("bench-{i}");
        config.slots = load.slots;
        config.batch = load.batch;
        let (layout, url, mut rx) = (layout.clone(), url.clone(), stop_rx.clone());
        let traces = traces.clone();
        let work = async move {
            let backend = Backend::open(&layout, url.as_deref(), 32)
                .await
                .expect("store opens");
            config.tracer = traces.map(|t| {
                dispatch_server::otel::Tracer::start(backend.store.clone(), &t, "dispatch-bench")
                    .expect("the exporter starts")
            });
            let worker = Worker::new(
                backend.store.clone(),
                backend.wake(Arc::new(Notify::new())),
                config,
                Arc::new(Metrics::default()),
            );
            let _ = worker
                .run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        };
        handles.push(if own_threads {
            // Its own thread and single-threaded runtime, as a `dispatch
            // worker` process of its own would run.
            let thread = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(work)
            });
            tokio::task::spawn_blocking(move || {
                let _ = thread.join();
            })
        } else {
            // In this runtime, as `dispatch server --workers 2` runs them.
            tokio::spawn(work)
        });
    }
    // Done when no run is left queued or in hand (cheap: one row at most).
    let live = RunFilter {
        statuses: vec![Status::Queued, Status::Starting, Status::Running],
        limit: Some(1),
        ..RunFilter::default()
    };
    while !creator
        .store
        .list_runs(&live)
        .await
        .expect("list")
        .is_empty()
    {
        tokio::time::sleep(load.poll).await;
    }
    let elapsed = started.elapsed();
    // While the workers' connections are up.
    let used = Cpu::now(database.as_deref());
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    eprintln!("{}", used.per_run(&cpu, n));
    // A rate only counts runs that did what they should.
    let failed = RunFilter {
        statuses: vec![
            Status::Failed,
            Status::TimedOut,
            Status::Cancelled,
            Status::Stopped,
        ],
        limit: Some(1),
        ..RunFilter::default()
    };
    let bad = creator.store.list_runs(&failed).await.expect("list");
    if let Some(run) = bad.first() {
        eprintln!("warning: run {} ended {}", run.id, run.status());
    }
    (n as f64 / elapsed.as_secs_f64(), dir)
}

async fn post_to_start(url: Option<String>, n: usize) -> (i64, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = noop_layout(&dir);
    let backend = Backend::open(&layout, url.as_deref(), 16)
        .await
        .expect("store opens");
    let store = backend.store.clone();
    let mut config = WorkerConfig::new(layout.clone());
    config.slots = 4;
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = Server::bind(listen, backend, layout, config)
        .await
        .expect("binds");
    let base = format!("http://{}", server.addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    // The server finds parcels in its store: upload the noop one first.
    let digest = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let upload = json!({"files": {"Agentfile": "FROM noop\nNAME bench\n"}});
            let (status, built) =
                crate::service_cluster::call(&base, "POST", "/v1/parcels", Some(&upload));
            assert!(status < 300, "the parcel uploads: {built}");
            built["digest"].as_str().expect("a digest").to_string()
        })
        .await
        .expect("upload task")
    };
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let base = base.clone();
        let parcel = digest.clone();
        let sent = now_ms();
        let id = tokio::task::spawn_blocking(move || {
            let body = json!({"parcel": parcel}).to_string();
            let response = client::request(
                &base,
                "POST",
                "/v1/runs?wait=true",
                &[],
                Some(body.as_bytes()),
            )
            .expect("POST");
            let text = response.text().expect("body");
            let run: Value = serde_json::from_str(&text).expect("json");
            run["id"]
                .as_str()
                .unwrap_or_else(|| panic!("a run id in the answer: {text}"))
                .parse::<dispatch_core::RunId>()
                .expect("run id")
        })
        .await
        .expect("client task");
        let events = store.list_events(&id, 0, 100).await.expect("events");
        let started = events
            .iter()
            .find(|e| e.event.data["to"] == "running")
            .map(|e| e.event.at)
            .expect("the run started");
        samples.push(started - sent);
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
    samples.sort_unstable();
    (
        samples[samples.len() / 2],
        samples[(samples.len() * 99 / 100).min(samples.len() - 1)],
    )
}
