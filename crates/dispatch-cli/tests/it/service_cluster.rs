//! Services owned by the cluster: two `dispatch server`s (no in-process
//! workers) and two `dispatch worker`s on one fresh PostgreSQL database.
//! Timers fire once per due time whichever server is alive, webhooks are
//! taken by either server, and every wake is a heartbeat run executed by a
//! worker.

use crate::remote_common;

use std::collections::BTreeSet;

use dispatch_core::now_ms;
use dispatch_test_support::eventually;
use dispatch_test_support::testdb::TestDatabase;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

struct Cluster {
    a: Server,
    b: Server,
    _workers: [Worker; 2],
    db: TestDatabase,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let db = postgres()?;
        let url = db.url().to_string();
        let server = || Server::start_on(Some(&url), &["--workers", "0"]);
        let (a, b) = (server(), server());
        let workers = [
            Worker::start(&url, "w1", &["--slots", "4"]),
            Worker::start(&url, "w2", &["--slots", "4"]),
        ];
        Some(Cluster {
            a,
            b,
            _workers: workers,
            db,
        })
    }
}

/// The heartbeat runs of `service`, as `server` lists them.
fn wakes(server: &Server, service: &str) -> Vec<Value> {
    let (status, page) = server.call(
        "GET",
        &format!("/v1/runs?parent={service}&limit=1000"),
        None,
    );
    assert_eq!(status, 200, "{page}");
    page["runs"].as_array().cloned().unwrap_or_default()
}

/// One raw HTTP request to `host`: status and JSON answer.
fn post(host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let response = dispatch_server::client::request(
        &format!("http://{host}"),
        "POST",
        path,
        headers,
        Some(body),
    )
    .expect("the server answers");
    let status = response.status;
    let text = response.text().expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn a_per_second_schedule_fires_once_per_due_time_while_a_server_is_killed() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let client = Client::new(&c.a);
    let dir = client.agent("ticker", "echo beat\n");
    // Concurrent: a loaded worker still behind on one wake never makes the
    // overlap policy drop the next fire (this test is about fires only).
    let id = client.ok(&[
        "serve",
        &dir,
        "--schedule",
        "* * * * * *",
        "--overlap",
        "concurrent",
    ]);
    // Shortened from the 20 s to about 10 s to keep CI fast: three
    // fires with both servers, then seven with server A killed.
    eventually(20, "three fires", || wakes(&c.b, &id).len() >= 3);
    c.a.kill();
    let killed_at = now_ms();
    eventually(30, "seven more seconds of fires", || {
        wakes(&c.b, &id).iter().any(|w| {
            w["payload"]["wake"]["scheduled_for"].as_i64().unwrap_or(0) >= killed_at + 7_000
        })
    });
    let all = wakes(&c.b, &id);
    let due: Vec<i64> = all
        .iter()
        .map(|w| {
            assert_eq!(w["operation"], "heartbeat", "{w}");
            assert_eq!(w["payload"]["wake"]["reason"], "schedule", "{w}");
            w["payload"]["wake"]["scheduled_for"]
                .as_i64()
                .expect("a due time")
        })
        .collect();
    let distinct: BTreeSet<i64> = due.iter().copied().collect();
    assert_eq!(distinct.len(), due.len(), "a due time fired twice: {due:?}");
    let (first, last) = (
        *distinct.first().expect("fires"),
        *distinct.last().expect("fires"),
    );
    let missing: Vec<i64> = (0..=(last - first) / 1000)
        .map(|n| first + n * 1000)
        .filter(|t| !distinct.contains(t))
        .collect();
    assert!(missing.is_empty(), "due times never fired: {missing:?}");
    // Each wake went through the queue to a worker.
    eventually(30, "the wakes to run", || {
        wakes(&c.b, &id)
            .iter()
            .filter(|w| w["status"] == "succeeded")
            .count()
            >= due.len()
    });
    let (status, service) = c.b.call("GET", &format!("/v1/runs/{id}"), None);
    assert_eq!((status, &service["status"]), (200, &json!("running")));
    drop(c.db);
}

#[test]
fn a_webhook_is_taken_by_either_server_as_a_heartbeat_run() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let client = Client::new(&c.a);
    let dir = client.agent_with(
        "hooky",
        "cat \"$DISPATCH_BRIEF\" >/dev/null 2>&1; echo got it\n",
        "LISTEN 127.0.0.1:0\nLISTEN_PATH /github\nLISTEN_METHOD POST\n",
    );
    let id = client.ok(&[
        "serve",
        &dir,
        "--name",
        "hooks-eu",
        "--listen-shared-secret",
        "s3cret",
        "--listen-max-body-bytes",
        "64",
    ]);
    let secret = [("x-dispatch-secret", "s3cret")];
    let mut accepted = Vec::new();
    for server in [&c.a, &c.b] {
        let (status, answer) = post(
            &server.host,
            "/hooks/hooks-eu/github?x=1",
            &secret,
            b"{\"n\":1}",
        );
        assert_eq!(
            (status, &answer["status"]),
            (202, &json!("accepted")),
            "{answer}"
        );
        accepted.push(answer["run_id"].as_str().expect("a run id").to_string());
    }
    for run in &accepted {
        let done = c.b.wait_for(&format!("/v1/runs/{run}"), |r| {
            r["status"] == "succeeded" || r["status"] == "failed"
        });
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["parent_id"], json!(id));
        let request = &done["payload"]["request"];
        assert_eq!(done["payload"]["wake"]["reason"], "http");
        assert_eq!(
            (&request["method"], &request["path"], &request["query"]),
            (&json!("POST"), &json!("/github"), &json!("x=1"))
        );
        assert_eq!(request["body"], "{\"n\":1}");
        assert_eq!(request["headers"]["x-dispatch-secret"], "[redacted]");
    }
    // The same answers as a local listener.
    let refused = [
        (
            "/hooks/hooks-eu/github",
            &[][..],
            &b"{}"[..],
            401,
            "unauthorized",
        ),
        (
            "/hooks/hooks-eu/github",
            &[("x-dispatch-secret", "nope")][..],
            b"{}",
            401,
            "unauthorized",
        ),
        (
            "/hooks/hooks-eu/other",
            &secret[..],
            b"{}",
            404,
            "not_found",
        ),
        ("/hooks/hooks-eu", &secret[..], b"{}", 404, "not_found"),
        ("/hooks/nobody/github", &secret[..], b"{}", 404, "not_found"),
        (
            "/hooks/hooks-eu/github",
            &secret[..],
            &[b'x'; 100][..],
            413,
            "body_too_large",
        ),
    ];
    for (path, headers, body, want, code) in refused {
        let (status, answer) = post(&c.b.host, path, headers, body);
        assert_eq!(
            (status, answer["code"].as_str()),
            (want, Some(code)),
            "{path}: {answer}"
        );
    }
    assert_eq!(wakes(&c.a, &id).len(), 2, "refused requests wake nothing");
    // Only the secret's digest is stored.
    let stored = tokio::runtime::Runtime::new().expect("rt").block_on(async {
        use dispatch_store::ServiceStore;
        let store = dispatch_store::PgStore::connect(c.db.url(), 1)
            .await
            .expect("connect");
        let id = id.parse().expect("an id");
        store.get_service_state(&id).await.expect("read")
    });
    let stored = serde_json::to_string(&stored).expect("json");
    assert!(!stored.contains("s3cret"), "{stored}");
    assert!(stored.contains("\"requests_handled\":2"), "{stored}");
    // `inspect-run` shows it as locally.
    let doc = client.inspect(&id);
    assert_eq!(doc["service"]["name"], "hooks-eu", "{doc}");
    assert_eq!(doc["service"]["listeners"][0]["requests_handled"], 2);
    assert_eq!(
        doc["service"]["config"]["listen"]["addr"],
        "/hooks/hooks-eu"
    );
}

#[test]
fn wake_and_stop_work_remotely_and_a_stopped_service_takes_no_wakes() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let client = Client::new(&c.a);
    let dir = client.agent("manual", "echo woken\n");
    let id = client.ok(&["serve", &dir, "--interval-ms", "0"]);
    let other = Client::new(&c.b);
    let heartbeat = other.ok(&["wake", &id[..12], "{\"n\": 7}"]);
    let done = c.a.wait_for(&format!("/v1/runs/{heartbeat}"), |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["payload"]["wake"]["reason"], "manual");
    assert_eq!(done["payload"]["payload"]["n"], 7);
    // A running service answers to its name too.
    let by_name = other.ok(&["wake", "manual"]);
    c.a.wait_for(&format!("/v1/runs/{by_name}"), |r| {
        r["status"] == "succeeded"
    });
    other.ok(&["stop", "manual"]);
    let doc = client.inspect(&id);
    assert_eq!(doc["status"], "stopped", "{doc}");
    let err = other.fails(&["wake", &id], 125);
    assert!(err.contains("only a running service"), "{err}");
    // Its name is free again.
    let again = client.ok(&["serve", &dir, "--interval-ms", "0"]);
    assert_ne!(again, id);
}

#[test]
fn clashing_names_and_bad_options_are_refused_in_one_line() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let client = Client::new(&c.a);
    let dir = client.agent("monitor", "echo ok\n");
    let id = client.ok(&["serve", &dir, "--schedule", "0 */5 * * * *"]);
    let other = Client::new(&c.b);
    let err = other.fails(&["serve", &dir, "--schedule", "0 */5 * * * *"], 125);
    assert!(
        err.contains(&format!(
            "service `monitor` is already running in the cluster as run {id}"
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = other.fails(&["serve", &dir, "--name", "monitor"], 125);
    assert!(err.contains("already running"), "{err}");
    let err = other.fails(&["serve", &dir, "--name", "b/ad"], 125);
    assert!(err.contains("not usable in a URL"), "{err}");
    let err = other.fails(
        &["serve", &dir, "--name", "m2", "--schedule", "* * 25 * * *"],
        125,
    );
    assert!(err.contains("the hour field `25`"), "{err}");
    // Nothing of the refused ones was started.
    let (_, page) = c.b.call("GET", "/v1/runs?operation=service", None);
    let live: Vec<&Value> = page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["status"] == "running")
        .collect();
    assert_eq!(live.len(), 1, "{page}");
}

#[test]
fn a_restarted_service_keeps_its_timers_and_wakes_once_for_the_fires_it_missed() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let client = Client::new(&c.a);
    let dir = client.agent("sleepy", "echo hi\n");
    let id = client.ok(&["serve", &dir, "--schedule", "* * * * * *"]);
    eventually(20, "a first fire", || !wakes(&c.a, &id).is_empty());
    assert_eq!(client.ok(&["stop", &id]), id);
    let stopped_at = now_ms();
    // Down long enough to miss two due times.
    eventually(5, "two missed seconds", || now_ms() > stopped_at + 2_500);
    let again = client.ok(&["restart", &id]);
    assert_ne!(again, id);
    let (_, run) = c.b.call("GET", &format!("/v1/runs/{again}"), None);
    assert_eq!(
        (&run["status"], &run["origin_id"]),
        (&json!("running"), &json!(id))
    );
    eventually(20, "a schedule fire after the restart", || {
        wakes(&c.b, &again)
            .iter()
            .any(|w| w["payload"]["wake"]["reason"] == "schedule")
    });
    let recoveries: Vec<Value> = wakes(&c.b, &again)
        .into_iter()
        .filter(|w| w["payload"]["wake"]["reason"] == "recovery")
        .collect();
    assert_eq!(recoveries.len(), 1, "one recovery wake: {recoveries:?}");
    let wake = &recoveries[0]["payload"]["wake"];
    assert_eq!(wake["previous_run_id"], json!(id));
    assert_eq!(wake["previous_status"], "stopped");
    assert_eq!(wake["missed"][0]["schedule"], "* * * * * *", "{wake}");
}
