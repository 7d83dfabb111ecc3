//! An idle worker on PostgreSQL polls nothing: it is woken by the
//! enqueue's `NOTIFY`, by a retry's backoff ending, and by a lease that
//! expires. Each test gives the worker a one-hour poll, so only those can
//! make it act in time.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::block_on;
use dispatch_core::{ProcRef, Status, now_ms};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_server::metrics::Metrics;
use dispatch_server::serve::Backend;
use dispatch_server::worker::{Worker, WorkerConfig};
use dispatch_store::{ClaimRequest, Run, RunStore};
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Builds a parcel named `name` from `agentfile` into the layout.
fn parcel(layout: &Layout, dir: &std::path::Path, name: &str, agentfile: &str) {
    let src = dir.join(name);
    std::fs::create_dir_all(&src).expect("a source directory");
    std::fs::write(src.join("Agentfile"), agentfile).expect("an Agentfile");
    dispatch_core::parcel::build(&src, &layout.parcels()).expect("the parcel builds");
}

fn request(parcel: &str) -> LaunchRequest {
    LaunchRequest {
        source: parcel.into(),
        operation: None,
        payload: json!({}),
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}

/// A worker that never polls: an hour between safety-net looks.
async fn start_worker(
    layout: &Layout,
    url: &str,
    lease: Duration,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let backend = Backend::open(layout, Some(url), 2)
        .await
        .expect("the worker's store opens");
    let mut config = WorkerConfig::new(layout.clone());
    config.name = "sleeper".into();
    config.slots = 2;
    config.poll = Duration::from_secs(3600);
    config.lease = lease;
    let worker = Worker::new(
        backend.store.clone(),
        backend.wake(Arc::new(Notify::new())),
        config,
        Arc::new(Metrics::default()),
    );
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
            .expect("the worker stops cleanly");
    });
    // Let it make its first claim and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (stop_tx, handle)
}

async fn wait_terminal<S: RunStore + ?Sized>(store: &S, run: &Run, within: Duration) -> Run {
    let deadline = Instant::now() + within;
    loop {
        let now = store.get_run(&run.id).await.expect("get");
        if now.state.is_terminal() {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "run {} is still {} after {within:?}",
            run.id,
            now.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_idle_worker_is_woken_by_the_enqueue_notification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path().join(".dispatch"));
    parcel(&layout, dir.path(), "quick", "FROM noop\nNAME quick\n");
    block_on(async {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let (stop, worker) = start_worker(&layout, db.url(), Duration::from_secs(30)).await;
        // Another process's store: no in-process wake-up reaches the worker.
        let creator = Backend::open(&layout, Some(db.url()), 1)
            .await
            .expect("the store opens");
        for _ in 0..3 {
            let (run, _) = launch::create(&*creator.store, &layout, &request("quick"))
                .await
                .expect("a run is created");
            let done = wait_terminal(&*creator.store, &run, Duration::from_secs(10)).await;
            assert_eq!(done.status(), Status::Succeeded);
        }
        stop.send(true).expect("the worker listens");
        worker.await.expect("the worker task");
    });
}

#[test]
fn a_retry_is_claimed_when_its_backoff_ends_without_polling() {
    a_retry_runs_after_its_backoff(false);
}

/// A claim skips a row another transaction holds locked for a moment (a
/// log write, an event append). A run that was ready then is claimed on a
/// later look, not left to the safety net's poll (an hour here).
#[test]
fn a_ready_run_a_claim_skipped_while_locked_is_claimed_soon_after() {
    a_retry_runs_after_its_backoff(true);
}

/// A run whose first attempt fails retries after a 1 s backoff on a worker
/// that never polls; with `locked`, the retry's row is held locked until
/// half a second after the backoff ends.
fn a_retry_runs_after_its_backoff(locked: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path().join(".dispatch"));
    parcel(
        &layout,
        dir.path(),
        "flaky",
        "FROM process\nNAME flaky\nCOMMAND [\"sh\", \"-c\", \"exit 3\"]\nRETRY 2 BACKOFF 1s..1s\n",
    );
    block_on(async {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let (stop, worker) = start_worker(&layout, db.url(), Duration::from_secs(30)).await;
        let creator = Backend::open(&layout, Some(db.url()), 1)
            .await
            .expect("the store opens");
        let (run, _) = launch::create(&*creator.store, &layout, &request("flaky"))
            .await
            .expect("a run is created");
        if locked {
            hold_locked_past_backoff(&*creator.store, &run, db.url()).await;
        }
        let done = wait_terminal(&*creator.store, &run, Duration::from_secs(15)).await;
        assert_eq!(done.status(), Status::Failed);
        assert_eq!(done.attempt, 2, "the second attempt ran after its backoff");
        stop.send(true).expect("the worker listens");
        worker.await.expect("the worker task");
    });
}

/// Once `run` waits out a retry's backoff, holds its row locked until half
/// a second after the backoff ends.
async fn hold_locked_past_backoff<S: RunStore + ?Sized>(store: &S, run: &Run, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready_at = loop {
        let now = store.get_run(&run.id).await.expect("get");
        if let dispatch_core::RunState::Queued {
            not_before: Some(at),
        } = now.state
        {
            break at;
        }
        assert!(Instant::now() < deadline, "no retry queued: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a connection");
    tokio::spawn(conn);
    let tx = client.transaction().await.expect("a transaction");
    tx.query(
        "SELECT 1 FROM runs WHERE id = $1 FOR UPDATE",
        &[&run.id.as_str()],
    )
    .await
    .expect("the lock");
    let held = u64::try_from(ready_at + 500 - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(held)).await;
    tx.commit().await.expect("the lock goes");
}

#[test]
fn an_idle_worker_sweeps_a_lease_when_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path().join(".dispatch"));
    parcel(&layout, dir.path(), "quick", "FROM noop\nNAME quick\n");
    block_on(async {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let creator = Backend::open(&layout, Some(db.url()), 1)
            .await
            .expect("the store opens");
        // A worker that claims with a short lease, then dies: it never renews.
        let (run, _) = launch::create(&*creator.store, &layout, &request("quick"))
            .await
            .expect("a run is created");
        let claimed = creator
            .store
            .claim(&ClaimRequest {
                worker: "doomed".into(),
                helper: ProcRef {
                    pid: 1,
                    start_ticks: 1,
                },
                limit: 1,
                now: now_ms(),
                lease_ms: 1500,
                labels: Vec::new(),
                free: None,
            })
            .await
            .expect("a claim");
        assert_eq!(claimed.len(), 1, "the doomed worker holds the run");
        // The live worker starts idle, with nothing to claim.
        let (stop, worker) = start_worker(&layout, db.url(), Duration::from_secs(30)).await;
        let done = wait_terminal(&*creator.store, &run, Duration::from_secs(15)).await;
        assert_eq!(done.status(), Status::Succeeded);
        let events = creator
            .store
            .list_events(&run.id, 0, usize::MAX)
            .await
            .expect("events");
        assert!(
            events.iter().any(|e| e.event.data["reason"]
                .as_str()
                .is_some_and(|r| r.contains("lease expired"))),
            "the dead claimer's lease was swept: {events:?}"
        );
        stop.send(true).expect("the worker listens");
        worker.await.expect("the worker task");
    });
}
