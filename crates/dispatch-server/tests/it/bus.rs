//! Bus mode: a worker that would otherwise poll once a minute is woken by the
//! Redis stream the server announces new runs on (whether it joined the
//! consumer group before or after the announcement). Skipped (with a message)
//! when Redis is not running on 127.0.0.1:6379, except under `CI=true`, where
//! that fails.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{Db, TestServer, block_on};
use dispatch_server::bus::BusConfig;
use dispatch_server::metrics::Metrics;
use dispatch_server::serve::Backend;
use dispatch_server::worker::{Worker, WorkerConfig};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

fn redis() -> Option<BusConfig> {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        let how =
            "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''`";
        // Under CI a missing service is a failure, never a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is not running on 127.0.0.1:6379 ({how})"
        );
        eprintln!("skipping: Redis is not running on 127.0.0.1:6379 ({how})");
        return None;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Some(BusConfig {
        addr: "127.0.0.1:6379".into(),
        stream: format!("dispatch-test:{}:{nanos}", std::process::id()),
    })
}

#[test]
fn a_new_run_wakes_a_bus_worker_that_would_not_poll_for_a_minute() {
    let Some(bus) = redis() else { return };
    let Some(server) = TestServer::start_with(Db::Sqlite, 0, Some(bus.clone())) else {
        return;
    };
    let parcel = server.noop_parcel();
    let layout = server.layout();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        block_on(async move {
            let backend = Backend::open(&layout, None, 1).await.expect("opens");
            let mut config = WorkerConfig::new(layout.clone());
            config.name = "bus-worker".into();
            config.poll = Duration::from_secs(60);
            let wake = backend
                .wake(Arc::new(Notify::new()))
                .with_bus(Some(bus), "bus-worker");
            let worker = Worker::new(
                backend.store.clone(),
                wake,
                config,
                Arc::new(Metrics::default()),
            );
            let run = tokio::spawn(worker.run(async {
                let _ = stop_rx.await;
            }));
            ready_tx.send(()).expect("the test waits");
            run.await.expect("task").expect("clean stop")
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker starts");
    let (status, run) = server.post("/v1/runs?wait=true&timeout=20", &json!({"parcel": parcel}));
    assert_eq!(
        status, 200,
        "woken by the bus, not the minute-long poll: {run}"
    );
    assert_eq!(run["status"], "succeeded");
    let _ = stop_tx.send(());
    let summary = worker.join().expect("worker thread");
    assert_eq!(summary.finished, 1);
}

#[test]
fn a_run_a_worker_queues_by_a_handoff_is_announced_on_the_bus() {
    let Some(bus) = redis() else { return };
    let Some(server) = TestServer::start_with(Db::Sqlite, 0, Some(bus.clone())) else {
        return;
    };
    let target = server.noop_parcel();
    // In the parcel's state directory: the sandboxed agent sees it there.
    let gate = server.layout().state_dir("hands-off").join("open");
    // Hands off to the noop parcel, then holds its slot until the gate opens.
    let script = format!(
        "printf '{{\"type\":\"handoff\",\"parcel\":\"{target}\",\"payload\":{{}}}}\\n' >> \"$DISPATCH_EVENTS\"\n\
         while [ ! -e '{}' ]; do sleep 0.02; done\n",
        gate.display()
    );
    let parcel = server.upload(&[
        (
            "Agentfile",
            "FROM process\nNAME hands-off\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", &script),
    ]);
    let layout = server.layout();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // `dispatch worker --bus …`: two slots, a poll it would not reach here.
    let worker = std::thread::spawn(move || {
        block_on(async move {
            let backend = Backend::open(&layout, None, 1).await.expect("opens");
            let mut config = WorkerConfig::new(layout.clone());
            config.name = "bus-handoff-worker".into();
            config.slots = 2;
            config.poll = Duration::from_secs(60);
            ready_tx.send(()).expect("the test waits");
            dispatch_server::serve::work(backend, config, Some(bus), async {
                let _ = stop_rx.await;
            })
            .await
            .expect("clean stop")
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker starts");
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    // The handed-off run ends while its origin still holds the other slot:
    // the bus woke the worker, not its minute-long poll.
    let listed = server.wait_for("/v1/runs?trigger=upstream", |b| {
        b["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["status"] == "succeeded"))
    });
    let (_, origin) = server.get(&format!("/v1/runs/{id}"));
    assert_eq!(origin["status"], "running", "{origin} {listed}");
    std::fs::write(&gate, "").expect("open the gate");
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    let _ = stop_tx.send(());
    let summary = worker.join().expect("worker thread");
    assert_eq!(summary.finished, 2);
}
