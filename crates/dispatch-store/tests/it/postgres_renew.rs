//! A lease renewal on PostgreSQL does not hold the runs it passed while it
//! waits for one whose row another transaction holds (a run's events being
//! appended): the free rows are renewed and committed first (issue #38: one
//! statement over 1,000 runs held them 0.5 s, and every append behind it).

use std::time::{Duration, Instant};

use dispatch_store::conformance::{create, id, new_run, request};
use dispatch_store::{PgStore, QueueStore};
use dispatch_test_support::testdb::TestDatabase;

async fn expires_at(client: &tokio_postgres::Client, run: &str) -> i64 {
    client
        .query_one("SELECT lease_expires_at FROM runs WHERE id = $1", &[&run])
        .await
        .expect("read the lease")
        .get(0)
}

#[tokio::test]
async fn a_renewal_renews_the_free_runs_at_once_and_waits_only_for_the_busy_one() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(db.url(), 4).await.expect("connect");
    for n in 1..=3 {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    let claimed = store.claim(&request("w1", 3, 100)).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let held: Vec<_> = claimed
        .iter()
        .map(|c| (c.run.id.clone(), c.fence))
        .collect();
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
            .await
            .expect("a raw connection");
        tokio::spawn(connection);
        client
    };
    let (mut locker, reader) = (connect().await, connect().await);
    // Another transaction holds run 2's row, as an append of its events does.
    let busy = id(2).to_string();
    let tx = locker.transaction().await.expect("begin");
    tx.query_one("SELECT fence FROM runs WHERE id = $1 FOR UPDATE", &[&busy])
        .await
        .expect("lock run 2");
    let renewal = {
        let (store, held) = (store.clone(), held.clone());
        tokio::spawn(async move { store.renew_leases("w1", &held, 777_000).await })
    };
    // Runs 1 and 3 are renewed and committed while run 2 is still held.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (one, three) = (
            expires_at(&reader, id(1).as_str()).await,
            expires_at(&reader, id(3).as_str()).await,
        );
        if one == 777_000 && three == 777_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the free runs were not renewed while another was busy: {one}, {three}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!renewal.is_finished(), "it waits for the busy run");
    assert_ne!(expires_at(&reader, &busy).await, 777_000);
    tx.commit().await.expect("release run 2");
    let mut renewed = renewal.await.expect("join").expect("renew");
    renewed.sort();
    assert_eq!(renewed, vec![id(1), id(2), id(3)], "every lease still held");
    assert_eq!(expires_at(&reader, &busy).await, 777_000);
}
