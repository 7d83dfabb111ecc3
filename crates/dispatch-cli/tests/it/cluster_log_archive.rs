//! Log archives in the cluster's artifact store, with the real binary: two
//! `dispatch server --workers 0` and two `dispatch worker`s on one fresh
//! PostgreSQL database, all with the same `--artifacts URL`. A finished
//! run's log over 64 KiB moves from the database to `logs/<sha256>` in the
//! store; both servers (and `dispatch logs --host`) serve it after the
//! worker that ran it is gone; a small log stays in the database; a copy
//! that does not match its digest is refused; a prune through a server
//! and retention delete the archive with its run. Once with a shared directory (`file://`), once
//! with a real S3-compatible server (`moto_server`) started by the test.
//!
//! PostgreSQL is 127.0.0.1:5432 (or `DISPATCH_TEST_PG`); `moto_server` is
//! found on PATH. Without them these tests fail under `CI=true` and are
//! skipped otherwise, saying how to get them.

use crate::remote_common;

use std::path::Path;

use dispatch_test_support::eventually;
use dispatch_test_support::http;
use remote_common::moto::Moto;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// About 110 KB of output: over the archive threshold.
const BIG: &str = "seq 1 20000\necho \"$DISPATCH_RUN_ID done\"\n";
const SMALL: &str = "echo \"$DISPATCH_RUN_ID small\"\n";

/// Where the archives can be looked at, per backend.
enum Look<'a> {
    Dir(&'a Path),
    S3 { endpoint: &'a str, bucket: &'a str },
}

impl Look<'_> {
    /// The digests under `logs/` in the store.
    fn archives(&self) -> Vec<String> {
        match self {
            Look::Dir(dir) => std::fs::read_dir(dir.join("logs"))
                .map(|entries| {
                    entries
                        .map(|e| e.expect("an entry").file_name().to_string_lossy().into())
                        .collect()
                })
                .unwrap_or_default(),
            Look::S3 { endpoint, bucket } => {
                let listing = http::get(&format!(
                    "{endpoint}/{bucket}?list-type=2&prefix=prefix/logs/"
                ))
                .call()
                .expect("the bucket lists")
                .into_string()
                .expect("XML");
                listing
                    .split("<Key>prefix/logs/")
                    .skip(1)
                    .filter_map(|rest| rest.split("</Key>").next())
                    .map(str::to_string)
                    .collect()
            }
        }
    }
}

fn finished(server: &Server, id: &str) -> Value {
    server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["status"]
            .as_str()
            .is_some_and(|s| !matches!(s, "queued" | "starting" | "running" | "created"))
    })
}

fn log_via(server: &Server, id: &str) -> (u16, String) {
    match http::get(&format!("http://{}/v1/runs/{id}/logs", server.host)).call() {
        Ok(r) => (r.status(), r.into_string().expect("text")),
        Err(http::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET logs: {e}"),
    }
}

/// The run's log archive as the database records it: (sha256, size).
fn archive_of(db_url: &str, id: &str) -> Option<(String, u64)> {
    use dispatch_store::{PgStore, RunLogStore};
    let id: dispatch_core::RunId = id.parse().expect("a run id");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let store = PgStore::connect(db_url, 1).await.expect("the database");
            let found = store.log_archive(&id).await.expect("read");
            found.map(|a| (a.sha256, a.size))
        })
}

fn archives_move_to_the_store(db_url: &str, url: &str, vars: &[(&str, &str)], look: &Look<'_>) {
    let args = ["--workers", "0", "--artifacts", url];
    let server_a = Server::start_with_env(Some(db_url), &args, vars);
    let server_b = Server::start_with_env(Some(db_url), &args, vars);
    let worker = |name: &str, label: &str| {
        Worker::start_with_env(
            db_url,
            name,
            &["--labels", label, "--slots", "1", "--artifacts", url],
            vars,
        )
    };
    let (worker_a, _b) = (worker("worker-a", "a"), worker("worker-b", "b"));
    let client = Client::new(&server_a);
    let big = client.agent("big", BIG);
    let small = client.agent("small", SMALL);

    // A long log on worker A, which then goes away.
    let id = client.ok(&["run", &big, "--label", "a", "-d"]);
    assert_eq!(finished(&server_a, &id)["status"], "succeeded");
    eventually(60, "the log is archived", || {
        archive_of(db_url, &id).is_some()
    });
    drop(worker_a);
    let (sha, size) = archive_of(db_url, &id).expect("archived");
    assert_eq!(look.archives(), std::slice::from_ref(&sha));

    // Server B, which never saw the run, serves it whole from the archive.
    let (status, text) = log_via(&server_b, &id);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\n19999\n20000\n"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains(&format!("{id} done")), "the end of the log");
    assert_eq!(
        hex::encode(Sha256::digest(text.as_bytes())),
        sha,
        "content-addressed"
    );
    assert_eq!(text.len() as u64, size);
    // The dashboard's run page shows the log's tail, read from the archive.
    let page = http::get(&format!("http://{}/ui/runs/{id}", server_b.host))
        .call()
        .expect("the run page")
        .into_string()
        .expect("HTML");
    assert!(page.contains("\n19999\n20000\n"), "the tail on the page");
    assert!(page.contains(&format!("{id} done")), "the tail on the page");
    // `dispatch logs --host` through server B too.
    let via_b = Client::new(&server_b);
    assert_eq!(via_b.ok(&["logs", &id]), text.trim());

    // A short log stays in the database: no new archive.
    let small_id = client.ok(&["run", &small, "--label", "b", "-d"]);
    assert_eq!(finished(&server_a, &small_id)["status"], "succeeded");
    let (status, small_text) = log_via(&server_a, &small_id);
    assert_eq!(status, 200);
    assert!(
        small_text.contains(&format!("{small_id} small")),
        "{small_text}"
    );
    assert_eq!(look.archives(), std::slice::from_ref(&sha));
    assert_eq!(archive_of(db_url, &small_id), None);

    // A damaged archive is refused by a server without a checked copy.
    if let Look::Dir(dir) = look {
        let path = dir.join("logs").join(&sha);
        let good = std::fs::read(&path).expect("the archive");
        std::fs::write(&path, b"tampered\n").expect("write");
        let (status, body) = server_a.call("GET", &format!("/v1/runs/{id}/logs"), None);
        assert_eq!(status, 503, "{body}");
        let message = body["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("log archive") && message.contains("does not match its digest"),
            "{body}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
        std::fs::write(&path, good).expect("write back");
    }

    // A prune through a server deletes a pruned run's archive from the store.
    let other = client.agent("other", BIG);
    let other_id = client.ok(&["run", &other, "--label", "b", "-d"]);
    assert_eq!(finished(&server_a, &other_id)["status"], "succeeded");
    eventually(60, "the second log is archived", || {
        archive_of(db_url, &other_id).is_some()
    });
    assert_eq!(look.archives().len(), 2);
    let body = serde_json::json!({"filters": {"parcel": ["other"]}});
    let (status, pruned) = server_b.call("POST", "/v1/runs/prune", Some(&body));
    assert_eq!(status, 200, "{pruned}");
    assert_eq!(pruned["removed"], serde_json::json!([other_id]), "{pruned}");
    assert_eq!(
        look.archives(),
        std::slice::from_ref(&sha),
        "only the pruned run's archive went"
    );

    // `dispatch rm` of one run deletes its archive from the store too.
    let gone = client.agent("gone", BIG);
    let gone_id = client.ok(&["run", &gone, "--label", "b", "-d"]);
    assert_eq!(finished(&server_a, &gone_id)["status"], "succeeded");
    eventually(60, "the third log is archived", || {
        archive_of(db_url, &gone_id).is_some()
    });
    assert_eq!(look.archives().len(), 2);
    client.ok(&["rm", &gone_id]);
    assert_eq!(
        look.archives(),
        std::slice::from_ref(&sha),
        "the removed run's archive went"
    );

    // Retention deletes the run and its archive from the store.
    let _keeper = Server::start_with_env(
        Some(db_url),
        &[
            "--workers",
            "0",
            "--artifacts",
            url,
            "--retention",
            "succeeded=0s",
            "--retention-interval",
            "1s",
        ],
        vars,
    );
    eventually(60, "the run is deleted", || {
        server_b.call("GET", &format!("/v1/runs/{id}"), None).0 == 404
    });
    eventually(60, "the archive is deleted", || look.archives().is_empty());
}

#[test]
fn a_shared_directory_keeps_finished_runs_logs() {
    let Some(db) = postgres() else { return };
    let shared = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", shared.path().display());
    archives_move_to_the_store(db.url(), &url, &[], &Look::Dir(shared.path()));
}

#[test]
fn an_s3_compatible_server_keeps_finished_runs_logs() {
    let Some(db) = postgres() else { return };
    let Some(s3) = Moto::start() else { return };
    let bucket = s3.bucket("dispatch-logs");
    let vars = s3.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let look = Look::S3 {
        endpoint: &s3.endpoint,
        bucket: &bucket,
    };
    archives_move_to_the_store(db.url(), &format!("s3://{bucket}/prefix"), &vars, &look);
}
