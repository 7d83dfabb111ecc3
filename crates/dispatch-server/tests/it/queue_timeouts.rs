//! Queue timeouts through the API: a run nobody claims in time ends
//! `timed_out`, kept by the server whether or not it has workers, on SQLite
//! and on PostgreSQL.

use crate::common;

use common::{Db, TestServer};
use serde_json::json;

/// Expands each test for both databases, with a server of `slots` worker slots.
macro_rules! on_both {
    ($slots:expr => $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    if let Some(server) = super::TestServer::start(super::Db::Sqlite, $slots) {
                        super::$name(server);
                    }
                }
                #[test]
                fn postgres() {
                    if let Some(server) = super::TestServer::start(super::Db::Postgres, $slots) {
                        super::$name(server);
                    }
                }
            }
        )+
    };
}

on_both!(1 => a_run_no_worker_may_take_times_out_and_the_others_run);
on_both!(0 => a_server_without_workers_still_ends_runs_past_their_queue_timeout);

fn a_run_no_worker_may_take_times_out_and_the_others_run(server: TestServer) {
    let parcel = server.noop_parcel();
    // The server's worker has no labels: nobody may take the gpu run.
    let (status, stuck) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "labels": ["gpu"], "queue_timeout": "300ms"}),
    );
    assert_eq!(status, 201, "{stuck}");
    let (status, fine) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "queue_timeout": "30s"}),
    );
    assert_eq!(status, 201, "{fine}");

    let path = format!("/v1/runs/{}", stuck["id"].as_str().expect("an id"));
    let ended = server.wait_for(&path, |r| r["status"] == "timed_out");
    let reason = ended["state"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("queue timeout"), "{reason}");
    assert!(reason.contains("300ms"), "{reason}");
    assert!(
        ended["state"]["started_at"].is_null(),
        "it never started: {ended}"
    );
    assert_eq!(ended["attempt"], 1);

    let path = format!("/v1/runs/{}", fine["id"].as_str().expect("an id"));
    server.wait_for(&path, |r| r["status"] == "succeeded");

    let (status, metrics) = server.text("/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("dispatch_runs_queue_timed_out_total 1"),
        "{metrics}"
    );
}

fn a_server_without_workers_still_ends_runs_past_their_queue_timeout(server: TestServer) {
    let parcel = server.noop_parcel();
    let (status, run) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "queue_timeout": "200ms"}),
    );
    assert_eq!(status, 201, "{run}");
    let (status, waiting) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(status, 201, "{waiting}");
    let path = format!("/v1/runs/{}", run["id"].as_str().expect("an id"));
    let ended = server.wait_for(&path, |r| r["status"] == "timed_out");
    assert!(
        ended["state"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("queue timeout")),
        "{ended}"
    );
    // A run without a queue timeout waits as long as it takes.
    let path = format!("/v1/runs/{}", waiting["id"].as_str().expect("an id"));
    let (_, still) = server.get(&path);
    assert_eq!(still["status"], "queued", "{still}");
}

#[test]
fn a_bad_queue_timeout_is_a_400_and_creates_nothing() {
    let server = TestServer::start(Db::Sqlite, 0).expect("SQLite needs no service");
    let parcel = server.noop_parcel();
    for bad in ["soon", "0s", "-5s", ""] {
        let (status, body) =
            server.post("/v1/runs", &json!({"parcel": parcel, "queue_timeout": bad}));
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("queue_timeout"), "{message}");
    }
    let (_, list) = server.get("/v1/runs");
    assert_eq!(list["runs"], json!([]), "nothing was created");
}
