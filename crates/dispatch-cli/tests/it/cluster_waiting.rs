//! Why a queued run waits, said by `ps --host`, `inspect-run --host`, the
//! API and the dashboard: no live worker, no live worker with its label, its
//! concurrency key full, every worker that could take it busy.

use crate::remote_common;

use std::time::{Duration, Instant};

use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;

/// `GET /v1/runs/{id}` once its `waiting` satisfies `ok`.
fn waiting_until(server: &Server, id: &str, ok: impl Fn(&str) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, doc) = server.call("GET", &format!("/v1/runs/{id}"), None);
        if doc["waiting"].as_str().is_some_and(&ok) {
            return doc;
        }
        assert!(Instant::now() < deadline, "never such a reason: {doc:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_queued_run_says_why_it_waits() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);

    // No worker at all.
    let quick = client.agent("quick", "echo hi\n");
    let first = client.ok(&["run", &quick, "--detach"]);
    waiting_until(&server, &first, |w| w.starts_with("no live worker ("));

    // A worker without the label the run asks for.
    let _cpu = Worker::start(db.url(), "cpu-worker", &["--slots", "2", "--labels", "cpu"]);
    let gpu = client.ok(&["run", &quick, "--detach", "--label", "gpu"]);
    waiting_until(&server, &gpu, |w| w == "no live worker has label gpu");
    let ps = client.ok(&["ps"]);
    assert!(
        ps.contains("queued: no live worker has label gpu"),
        "ps says why: {ps}"
    );
    let json = client.ok(&["ps", "--format", "json"]);
    let listed: Value = serde_json::from_str(&json).expect("ps json");
    let row = listed
        .as_array()
        .and_then(|l| l.iter().find(|r| r["id"] == gpu.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(row["waiting"], "no live worker has label gpu", "{json}");
    let inspect = client.ok(&["inspect-run", &gpu]);
    assert!(
        inspect.contains("Waiting:") && inspect.contains("no live worker has label gpu"),
        "{inspect}"
    );
    let page = dispatch_server::client::request(
        &format!("http://{}", server.host),
        "GET",
        &format!("/ui/runs/{gpu}"),
        &[],
        None,
    )
    .expect("the dashboard answers");
    let html = page.text().expect("html");
    assert!(
        html.contains("no live worker has label gpu"),
        "the dashboard says why: {html}"
    );

    // A concurrency key whose one slot is taken.
    let keyed = client.agent_with(
        "keyed",
        "sleep 30\n",
        "CONCURRENCY KEY payload.customer MAX 1\n",
    );
    let holder = client.ok(&["run", &keyed, "--detach", "--job", r#"{"customer":"c42"}"#]);
    let behind = client.ok(&["run", &keyed, "--detach", "--job", r#"{"customer":"c42"}"#]);
    waiting_until(&server, &behind, |w| {
        w == "concurrency key keyed/c42: 1 of 1 running"
    });

    // The first run was taken by the worker; the one worker's slots (2)
    // now hold `first` (done) and `holder`; fill the last one.
    let other = client.ok(&["run", &keyed, "--detach", "--job", r#"{"customer":"c7"}"#]);
    let busy = client.ok(&["run", &quick, "--detach"]);
    waiting_until(&server, &busy, |w| {
        w == "every live worker that can take it is busy (2 of 2 slots)"
    });
    // Runs that still wait or run end now (one may have ended meanwhile).
    for id in [&behind, &busy, &gpu, &holder, &other] {
        let _ = client.run(&["stop", id, "-t", "0"]);
    }
}
