//! `dispatch-bench concurrency`: claim throughput with concurrency keys on
//! vs off, in the same run, on SQLite and PostgreSQL.
//!
//! `--runs` (default 20,000) runs are enqueued, either without a key or
//! spread over `--keys` keys (default 1,000) with `MAX 4`; then two claimers
//! (each its own connection pool on PostgreSQL) claim batches of 512 and
//! finish each batch at once (`succeed_at_once`, as the noop courier does)
//! until the queue is empty. The rate is runs / time to drain; the ratio
//! keyed / plain is the cost of counting each key's slots in the claim.

use std::time::Instant;

use dispatch_core::concurrency::{RunConcurrency, Strategy};
use dispatch_core::{Operation, ProcRef, RunId, now_ms};
use dispatch_store::{
    ClaimRequest, NewRun, NoopStore, PgStore, QueueOptions, QueueStore, RunExtras, SqliteStore,
};
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;

const BATCH: usize = 512;

pub fn main(args: &[String]) {
    let value = |flag: &str| crate::flag_value(args, flag);
    crate::use_database_url(args);
    let runs: usize = value("--runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let keys: usize = value("--keys")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| measurement | plain | keyed ({keys} keys, MAX 4) | keyed / plain |\n|---|---|---|---|"
    );
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            SqliteStore::open(&dir.path().join(name), std::time::Duration::from_secs(5))
                .expect("sqlite opens")
        };
        let plain = drain(&open("plain.db"), &open("plain.db"), runs, None).await;
        let keyed = drain(&open("keyed.db"), &open("keyed.db"), runs, Some(keys)).await;
        row("SQLite", runs, plain, keyed);
        let pg = |db: &TestDatabase| {
            let url = db.url().to_string();
            async move { PgStore::connect(&url, 4).await.expect("postgres connects") }
        };
        match (TestDatabase::create().await, TestDatabase::create().await) {
            (Some(a), Some(b)) => {
                let plain = drain(&pg(&a).await, &pg(&a).await, runs, None).await;
                let keyed = drain(&pg(&b).await, &pg(&b).await, runs, Some(keys)).await;
                row("PostgreSQL", runs, plain, keyed);
            }
            _ => println!("| claim throughput, PostgreSQL | skipped (unreachable) | | |"),
        }
    });
}

fn row(store: &str, runs: usize, plain: f64, keyed: f64) {
    println!(
        "| claim throughput, {store}, {runs} runs, 2 claimers × {BATCH} | {plain:.0} runs/s | {keyed:.0} runs/s | {:.2} |",
        keyed / plain
    );
}

/// Enqueues `runs` (keyed over `keys` keys when given) with `a`, drains
/// them with claimers on `a` and `b`; runs per second.
async fn drain<S: QueueStore + NoopStore>(a: &S, b: &S, runs: usize, keys: Option<usize>) -> f64 {
    for n in 0..runs {
        let new = NewRun {
            id: RunId::new(),
            parcel_digest: "b".repeat(64),
            parcel_name: "bench".into(),
            operation: Operation::Job,
            parent_id: None,
            origin_id: None,
            payload: json!({}),
            brief_sha256: "c".repeat(64),
            created_at: now_ms(),
            claimed_by: None,
            created: false,
            trigger: dispatch_core::Trigger::Manual,
            handoff_key: None,
            project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
        };
        let extras = RunExtras {
            concurrency: keys.map(|k| RunConcurrency {
                key: format!("bench/{}", n % k),
                max: 4,
                strategy: Strategy::Queue,
            }),
            ..RunExtras::default()
        };
        a.enqueue_with(&new, &extras, &QueueOptions::default(), false)
            .await
            .expect("enqueue");
    }
    let started = Instant::now();
    let (x, y) = tokio::join!(claimer(a, "a"), claimer(b, "b"));
    assert_eq!(x + y, runs, "every run claimed once");
    runs as f64 / started.elapsed().as_secs_f64()
}

async fn claimer<S: QueueStore + NoopStore>(store: &S, name: &str) -> usize {
    let mut done = 0;
    let mut empty = 0;
    while empty < 3 {
        let request = ClaimRequest {
            worker: name.to_string(),
            helper: ProcRef {
                pid: std::process::id(),
                start_ticks: 0,
            },
            limit: BATCH,
            now: now_ms(),
            lease_ms: 30_000,
            labels: Vec::new(),
            free: None,
        };
        let claimed = store.claim(&request).await.expect("claim");
        if claimed.is_empty() {
            empty += 1;
            tokio::task::yield_now().await;
            continue;
        }
        empty = 0;
        let held: Vec<(RunId, i64)> = claimed
            .iter()
            .map(|c| (c.run.id.clone(), c.fence))
            .collect();
        done += store
            .succeed_at_once(&held, now_ms())
            .await
            .expect("finish")
            .len();
    }
    done
}
