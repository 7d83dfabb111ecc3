//! Workers racing over one queue: every run is executed exactly once.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::block_on;
use dispatch_core::Status;
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_server::metrics::Metrics;
use dispatch_server::serve::Backend;
use dispatch_server::worker::{Worker, WorkerConfig, WorkerSummary};
use dispatch_store::RunFilter;
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

const RUNS: usize = 1000;

fn noop_layout(dir: &tempfile::TempDir) -> Layout {
    let layout = Layout::new(dir.path().join(".dispatch"));
    let src = dir.path().join("bench");
    std::fs::create_dir_all(&src).expect("a source directory");
    std::fs::write(src.join("Agentfile"), "FROM noop\nNAME bench\n").expect("an Agentfile");
    dispatch_core::parcel::build(&src, &layout.parcels()).expect("the parcel builds");
    layout
}

/// Three workers, each with its own connection(s), drain a queue of `RUNS`
/// noop runs; then every run succeeded with one attempt and one start.
async fn three_workers_race(layout: Layout, url: Option<String>) {
    let creator = Backend::open(&layout, url.as_deref(), 4)
        .await
        .expect("the store opens");
    let request = LaunchRequest {
        source: "bench".into(),
        operation: None,
        payload: json!({}),
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
    for _ in 0..RUNS {
        launch::create(&*creator.store, &layout, &request)
            .await
            .expect("a run is created");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    for n in 0..3 {
        let backend = Backend::open(&layout, url.as_deref(), 4)
            .await
            .expect("each worker has its own store");
        let mut config = WorkerConfig::new(layout.clone());
        config.name = format!("racer-{n}");
        config.slots = 16;
        config.batch = 8;
        config.poll = Duration::from_millis(100);
        let worker = Worker::new(
            backend.store.clone(),
            backend.wake(Arc::new(Notify::new())),
            config,
            Arc::new(Metrics::default()),
        );
        let mut rx = stop_rx.clone();
        handles.push(tokio::spawn(worker.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = RunFilter {
        statuses: vec![Status::Succeeded],
        ..RunFilter::default()
    };
    loop {
        let finished = creator.store.list_runs(&done).await.expect("list").len();
        if finished == RUNS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {finished} of {RUNS} runs finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).expect("the workers listen");
    let mut total = WorkerSummary::default();
    for h in handles {
        let s = h
            .await
            .expect("the worker task")
            .expect("the worker stops cleanly");
        total.claimed += s.claimed;
        total.finished += s.finished;
        total.lost += s.lost;
    }
    assert_eq!(total.claimed, RUNS as u64, "claimed once each: {total:?}");
    assert_eq!(total.finished, RUNS as u64, "{total:?}");
    assert_eq!(total.lost, 0);
    let all = creator
        .store
        .list_runs(&RunFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), RUNS);
    for run in all {
        assert_eq!(run.status(), Status::Succeeded);
        assert_eq!(run.attempt, 1);
        let events = creator
            .store
            .list_events(&run.id, 0, usize::MAX)
            .await
            .expect("events");
        let starts = events
            .iter()
            .filter(|e| e.event.kind == "state" && e.event.data["to"] == "running")
            .count();
        assert_eq!(starts, 1, "run {} started exactly once", run.id);
        let claims = events
            .iter()
            .filter(|e| e.event.kind == "state" && e.event.data["to"] == "starting")
            .count();
        assert_eq!(claims, 1, "run {} claimed exactly once", run.id);
    }
}

#[test]
fn three_workers_on_postgres_execute_each_of_1000_runs_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = noop_layout(&dir);
    block_on(async {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        three_workers_race(layout, Some(db.url().to_string())).await;
    });
}

#[test]
fn three_workers_on_sqlite_execute_each_of_1000_runs_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = noop_layout(&dir);
    block_on(three_workers_race(layout, None));
}

#[test]
fn a_busy_worker_stops_claiming_on_shutdown_even_with_a_full_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = noop_layout(&dir);
    block_on(async {
        let backend = Backend::open(&layout, None, 1).await.expect("opens");
        let request = LaunchRequest {
            source: "bench".into(),
            operation: None,
            payload: json!({}),
            parent_id: None,
            origin_id: None,
            project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
        };
        for _ in 0..2000 {
            launch::create(&*backend.store, &layout, &request)
                .await
                .expect("create");
        }
        let mut config = WorkerConfig::new(layout.clone());
        config.slots = 1;
        config.batch = 1;
        let worker = Worker::new(
            backend.store.clone(),
            backend.wake(Arc::new(Notify::new())),
            config,
            Arc::new(Metrics::default()),
        );
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let handle = tokio::spawn(worker.run(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        let some_done = RunFilter {
            statuses: vec![Status::Succeeded],
            limit: Some(1),
            ..RunFilter::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while backend
            .store
            .list_runs(&some_done)
            .await
            .expect("list")
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the worker never finished a run");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).expect("the worker listens");
        let summary = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("the worker stops while the queue is still full")
            .expect("task")
            .expect("clean stop");
        assert!(summary.finished >= 1);
        let queued = RunFilter {
            statuses: vec![Status::Queued],
            ..RunFilter::default()
        };
        let left = backend.store.list_runs(&queued).await.expect("list").len();
        assert!(left > 0, "it stopped claiming: {summary:?}");
        assert_eq!(left as u64 + summary.finished, 2000, "{summary:?}");
    });
}
