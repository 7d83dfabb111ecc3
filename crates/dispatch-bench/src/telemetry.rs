//! `dispatch-bench telemetry [--runs N] [--rounds R] [--database-url URL]`:
//! noop throughput on PostgreSQL with OTLP export off and on (against an
//! OTLP/HTTP receiver on loopback that takes `POST /v1/traces` and answers
//! 200), alternating, `--rounds` times each (default 3 × 20,000 runs).
//!
//! `dispatch-bench retention [--seed N] [--rate R] [--database-url URL]`:
//! `--seed` (default 200,000) finished runs with 3 events and an attempt each
//! are written to a fresh PostgreSQL database; then noop runs are enqueued
//! at `--rate` per second (default 500, from 8 enqueuing tasks) through two workers, first alone,
//! then while a retention pass (`succeeded=1h`) deletes the seeded runs.
//! Queue latency (enqueue → finished, for a noop run) p50 / p99 of both
//! phases, and the pass's deletion rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dispatch_core::now_ms;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_runtime::retention::{Pace, RetentionSpec, retention_pass_at};
use dispatch_server::metrics::Metrics;
use dispatch_server::serve::Backend;
use dispatch_server::worker::{Worker, WorkerConfig};
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::cluster::{Load, traced_throughput};

fn number(args: &[String], flag: &str, default: usize) -> usize {
    crate::flag_value(args, flag)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An OTLP/HTTP receiver that counts what it is sent.
async fn receiver(requests: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let requests = requests.clone();
            async move {
                requests.fetch_add(1, Ordering::Relaxed);
                drop(body);
                [("content-type", "application/x-protobuf")]
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

pub fn telemetry(args: &[String]) {
    crate::use_database_url(args);
    let runs = number(args, "--runs", 20_000);
    let rounds = number(args, "--rounds", 3);
    runtime().block_on(async {
        let requests = Arc::new(AtomicU64::new(0));
        let url = receiver(requests.clone()).await;
        let load = Load::noop(512);
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for traced in [false, true] {
                let Some(db) = TestDatabase::create().await else {
                    println!("PostgreSQL unreachable");
                    return;
                };
                let traces = traced.then(|| url.clone());
                let (rate, _dir) =
                    traced_throughput(Some(db.url().to_string()), runs, &load, false, traces).await;
                eprintln!("export {}: {rate:.0} runs/s", if traced { "on" } else { "off" });
                if traced { on.push(rate) } else { off.push(rate) }
                // Let the exporter drain before the database goes.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!("| measurement | result |\n|---|---|");
        println!("| noop throughput, PostgreSQL, {runs} runs, export off ({rounds} rounds) | {:.0} runs/s (each: {off:.0?}) |", mean(&off));
        println!("| the same, OTLP export on | {:.0} runs/s (each: {on:.0?}) |", mean(&on));
        println!("| cost of export | {:.1} % |", (1.0 - mean(&on) / mean(&off)) * 100.0);
        println!("| OTLP requests received | {} |", requests.load(Ordering::Relaxed));
    });
}

pub fn retention(args: &[String]) {
    crate::use_database_url(args);
    let seed = number(args, "--seed", 200_000);
    let rate = number(args, "--rate", 500).max(1);
    let default = Pace::default();
    let pace = Pace {
        batch: number(args, "--batch", default.batch).max(1),
        pause: std::time::Duration::from_millis(number(
            args,
            "--pause-ms",
            default.pause.as_millis() as usize,
        ) as u64),
        yield_factor: number(args, "--yield", default.yield_factor as usize) as u32,
    };
    eprintln!("pace: {pace:?}");
    runtime().block_on(async {
        let Some(db) = TestDatabase::create().await else {
            println!("PostgreSQL unreachable");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = {
            let layout = dispatch_runtime::Layout::new(dir.path().join(".dispatch"));
            let src = dir.path().join("bench");
            std::fs::create_dir_all(&src).expect("mkdir");
            std::fs::write(src.join("Agentfile"), "FROM noop\nNAME bench\n").expect("Agentfile");
            dispatch_core::parcel::build(&src, &layout.parcels()).expect("parcel builds");
            layout
        };
        let backend = Backend::open(&layout, Some(db.url()), 8).await.expect("store");
        let began = Instant::now();
        seed_finished(db.url(), seed).await;
        eprintln!("seeded {seed} finished runs in {:.1?}", began.elapsed());
        let (stop_tx, stop_rx) = watch::channel(false);
        for i in 0..2 {
            let mut config = WorkerConfig::new(layout.clone());
            config.name = format!("bench-{i}");
            config.slots = 64;
            let (layout, url, mut rx) = (layout.clone(), db.url().to_string(), stop_rx.clone());
            tokio::spawn(async move {
                let backend = Backend::open(&layout, Some(&url), 8).await.expect("store");
                let worker = Worker::new(
                    backend.store.clone(),
                    backend.wake(Arc::new(Notify::new())),
                    config,
                    Arc::new(Metrics::default()),
                );
                let _ = worker.run(async move { let _ = rx.wait_for(|s| *s).await; }).await;
            });
        }
        // Phase 1: runs flow alone; phase 2: as they flow, the pass deletes
        // the seeded runs (and autovacuum follows it: part of its cost).
        let alone_for = std::time::Duration::from_secs(number(args, "--alone-secs", 60) as u64);
        let started = Instant::now();
        let (alone, _) = flow(&backend, &layout, rate, || started.elapsed() >= alone_for).await;
        let spec: RetentionSpec = "succeeded=1h".parse().expect("spec");
        let store = backend.store.clone();
        let (pass_layout, pass_spec) = (layout.clone(), spec.clone());
        let pass = tokio::spawn(async move {
            let began = Instant::now();
            let report = retention_pass_at(&*store, &pass_layout, None, &pass_spec, now_ms(), pace)
                .await
                .expect("retention pass");
            (report, began.elapsed())
        });
        let (during, _) = flow(&backend, &layout, rate, || pass.is_finished()).await;
        let (report, took) = pass.await.expect("pass");
        let _ = stop_tx.send(true);
        let pct = |v: &[i64], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
        println!("| measurement | result |\n|---|---|");
        println!(
            "| retention pass over {seed} finished runs (PostgreSQL) | {} runs deleted in {:.1?} ({:.0} runs/s) |",
            report.runs,
            took,
            report.runs as f64 / took.as_secs_f64()
        );
        println!(
            "| queue latency, {rate} runs/s asked, no retention ({} runs, {:.0} runs/s carried) | p50 {} ms, p99 {} ms |",
            alone.len(),
            alone.len() as f64 / alone_for.as_secs_f64(),
            pct(&alone, 50),
            pct(&alone, 99)
        );
        println!(
            "| queue latency, {rate} runs/s asked, retention running ({} runs, {:.0} runs/s carried) | p50 {} ms, p99 {} ms |",
            during.len(),
            during.len() as f64 / took.as_secs_f64(),
            pct(&during, 50),
            pct(&during, 99)
        );
    });
}

/// How many tasks enqueue at once: one `create` is a commit (an fsync), so
/// a single enqueuer tops out well under 1,000 runs/s.
const ENQUEUERS: usize = 8;

/// Enqueues noop runs at `rate` per second (from [`ENQUEUERS`] tasks, each
/// at its share, staggered) until `done()`; returns the sorted queue
/// latencies (enqueue → finished) of the runs it made.
async fn flow(
    backend: &Backend,
    layout: &dispatch_runtime::Layout,
    rate: usize,
    done: impl Fn() -> bool,
) -> (Vec<i64>, usize) {
    let request = LaunchRequest {
        source: "bench".into(),
        operation: None,
        payload: json!({}),
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
    // The parcel is resolved and the brief written once (the first run);
    // the enqueuers only insert, so what they measure is the queue's.
    let (first, parcel) = launch::create(&*backend.store, layout, &request)
        .await
        .expect("create");
    let parcel = Arc::new(parcel);
    let every = Duration::from_secs_f64(ENQUEUERS as f64 / rate as f64);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..ENQUEUERS)
        .map(|k| {
            let (store, request, parcel) = (backend.store.clone(), request.clone(), parcel.clone());
            let (operation, brief) = (first.operation, first.brief_sha256.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut next = start + every.mul_f64(k as f64 / ENQUEUERS as f64);
                tokio::time::sleep_until(next).await;
                while !stop.load(Ordering::Relaxed) {
                    let new = request.new_run(&parcel, operation, brief.clone());
                    let run = store.create_run(&new).await.expect("create");
                    ids.push(run.id);
                    next += every;
                    tokio::time::sleep_until(next).await;
                }
                ids
            })
        })
        .collect();
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut ids = vec![first.id];
    for t in tasks {
        ids.extend(t.await.expect("enqueuer"));
    }
    let mut latencies = Vec::with_capacity(ids.len());
    for id in &ids {
        loop {
            let run = backend.store.get_run(id).await.expect("get");
            if run.status().is_terminal() {
                latencies.push(run.updated_at - run.created_at);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    latencies.sort_unstable();
    let n = latencies.len();
    (latencies, n)
}

/// `n` finished runs (as old as 1970) with an attempt and three events each,
/// written by `generate_series` from one real finished run's row.
async fn seed_finished(url: &str, n: usize) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let n = n as i64;
    let id = "lpad(to_hex(g), 32, '0')";
    let state = r#"{"status":"succeeded","started_at":1000,"ended_at":2000,"exit_code":0}"#;
    for chunk in (0..n).step_by(50_000) {
        let (lo, hi) = (chunk + 1, (chunk + 50_000).min(n));
        client
            .batch_execute(&format!(
                "INSERT INTO runs (id, version, parcel_digest, parcel_name, operation, status, state, \
                 attempt, payload, brief_sha256, created_at, updated_at) \
                 SELECT {id}, 4, 'seed', 'seed', 'job', 'succeeded', '{state}', 1, '{{}}', \
                 'seed-' || g, 1000 + g, 2000 + g FROM generate_series({lo}, {hi}) g; \
                 INSERT INTO attempts (run_id, number, started_at, ended_at, status, exit_code) \
                 SELECT {id}, 1, 1000 + g, 2000 + g, 'succeeded', 0 FROM generate_series({lo}, {hi}) g; \
                 INSERT INTO events (run_id, attempt, at, type, data) \
                 SELECT {id}, 1, 1000 + g + k, 'state', '{{\"to\":\"running\"}}' \
                 FROM generate_series({lo}, {hi}) g, generate_series(1, 3) k;"
            ))
            .await
            .expect("seed");
    }
    client.batch_execute("ANALYZE").await.expect("analyze");
}
