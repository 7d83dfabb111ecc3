//! A short database outage is invisible to submitters: a server on
//! PostgreSQL, reaching it through a fault-injecting TCP proxy, keeps
//! accepting runs while the database "restarts" (every connection cut, new
//! ones closed) under a stream of submissions: each one is answered 201 and
//! creates exactly one run. An outage longer than `--enqueue-retry` is
//! answered 503 `unavailable` with `Retry-After`, naming nothing of the
//! database, and creates nothing.

use dispatch_test_support::proxy;

use crate::common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, block_on};
use dispatch_server::client;
use dispatch_store::{PgStore, RunFilter, RunStore};
use dispatch_test_support::testdb::TestDatabase;
use proxy::Proxy;
use serde_json::json;

/// A fresh database and a proxy in front of it; `None` (skipped) when
/// PostgreSQL is not there outside CI.
fn database_behind_proxy() -> Option<(TestDatabase, Proxy)> {
    let db = block_on(TestDatabase::create())?;
    let proxy = Proxy::start(upstream_of(db.url())).expect("the proxy listens");
    Some((db, proxy))
}

/// The `host:port` of a `postgres://user@host:port/db` URL.
fn upstream_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:5432")
    };
    authority
        .to_socket_addrs()
        .expect("the database's address resolves")
        .next()
        .expect("an address")
}

/// Every run in the database (read directly, not through the proxy):
/// how many runs carry each payload `n`.
fn runs_by_submission(db: &TestDatabase) -> BTreeMap<u64, usize> {
    block_on(async {
        let store = PgStore::connect(db.url(), 1).await.expect("connects");
        let runs = store
            .list_runs(&RunFilter {
                limit: Some(100_000),
                ..RunFilter::default()
            })
            .await
            .expect("list runs");
        let mut by = BTreeMap::new();
        for run in runs {
            let n = run.payload["n"].as_u64().expect("every run has its n");
            *by.entry(n).or_insert(0) += 1;
        }
        by
    })
}

#[test]
fn submissions_ride_out_a_database_restart_each_creating_one_run() {
    let Some((db, proxy)) = database_behind_proxy() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Default --enqueue-retry (10 s); no workers: the runs stay queued.
    let server = TestServer::start_on(
        dir.path().to_path_buf(),
        Some(proxy.url_for(db.url())),
        0,
        None,
    );
    let parcel = server.noop_parcel();
    const SUBMISSIONS: usize = 240;
    const SUBMITTERS: usize = 8;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let base = format!("http://{}", server.addr);
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            let (next, done, base, parcel) =
                (next.clone(), done.clone(), base.clone(), parcel.clone());
            std::thread::spawn(move || {
                let mut refused = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= SUBMISSIONS {
                        return refused;
                    }
                    let body = json!({"parcel": parcel, "payload": {"n": n}}).to_string();
                    let response =
                        client::request(&base, "POST", "/v1/runs", &[], Some(body.as_bytes()))
                            .expect("the server answers");
                    let status = response.status;
                    if status != 201 {
                        let text = response.text().unwrap_or_default();
                        refused.push(format!("submission {n}: {status} {text}"));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Three restarts of half a second, while submissions stream in.
    for at in [SUBMISSIONS / 5, SUBMISSIONS / 2, SUBMISSIONS * 4 / 5] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::SeqCst) < at {
            assert!(Instant::now() < deadline, "submissions stalled before {at}");
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.down();
        std::thread::sleep(Duration::from_millis(500));
        proxy.heal();
    }
    let refused: Vec<String> = submitters
        .into_iter()
        .flat_map(|t| t.join().expect("a submitter"))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {SUBMISSIONS} submissions were refused: {refused:#?}",
        refused.len()
    );
    let by = runs_by_submission(&db);
    let twice: Vec<_> = by.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "submissions with other than one run: {twice:?}"
    );
    assert_eq!(by.len(), SUBMISSIONS, "one run per submission");
}

#[test]
fn an_outage_longer_than_the_retry_answers_503_with_retry_after_and_creates_nothing() {
    let Some((db, proxy)) = database_behind_proxy() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_configured(
        dir.path().to_path_buf(),
        Some(proxy.url_for(db.url())),
        0,
        |s| s.with_enqueue_retry(Duration::from_millis(800)),
    );
    let parcel = server.noop_parcel();
    proxy.down();
    let body = json!({"parcel": parcel, "payload": {"n": 1}}).to_string();
    let base = format!("http://{}", server.addr);
    let response = client::request(&base, "POST", "/v1/runs", &[], Some(body.as_bytes()))
        .expect("the server answers");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    let text = response.text().expect("a body");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
    assert_eq!(answer["code"], "unavailable", "{text}");
    let port = proxy.addr().port().to_string();
    for secret in [db.name(), "postgres", "127.0.0.1", port.as_str()] {
        assert!(
            !text.contains(secret),
            "the answer tells `{secret}`: {text}"
        );
    }
    proxy.heal();
    assert!(
        runs_by_submission(&db).is_empty(),
        "a refused submission creates nothing"
    );
    // The database is back: the next submission goes through.
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel, "payload": {"n": 2}}));
    assert_eq!(status, 201, "{run}");
}
