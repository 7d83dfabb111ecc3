//! The worker's view of a claimed run (`dispatch_server::fenced`) against a
//! real SQLite store: once the run was taken over, what the old holder
//! records — artifacts (a large output among them), events — is refused
//! with its stale token, and nothing of it is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_core::NewEvent;
use dispatch_server::SharedStore;
use dispatch_server::fenced::FencedStore;
use dispatch_server::self_fence::LeaseClock;
use dispatch_store::conformance::{id, new_run, request};
use dispatch_store::{Artifact, ArtifactStore, EventStore, RunStore, SqliteStore, StoreError};
use serde_json::json;

fn artifact(name: &str, c: char) -> Artifact {
    Artifact {
        name: name.into(),
        sha256: c.to_string().repeat(64),
        size: 3,
    }
}

#[tokio::test]
async fn a_holder_whose_run_was_taken_over_records_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        SqliteStore::open(&dir.path().join("dispatch.db"), Duration::from_secs(5)).expect("db");
    sqlite
        .create_run(&new_run(id(1), "p", 10))
        .await
        .expect("a run");
    let store: SharedStore = Arc::new(sqlite);
    let old = store
        .claim(&request("slow", 1, 100))
        .await
        .expect("claim")
        .remove(0);
    let holder = FencedStore::new(store.clone(), old.fence, LeaseClock::new(Instant::now()));
    holder
        .add_artifacts(&id(1), &[artifact("report.md", 'a')])
        .await
        .expect("the holder records its artifacts");

    // Its lease runs out and another worker takes the run over; this
    // holder's clock never noticed (a partition that healed).
    assert_eq!(store.sweep_expired(1101).await.expect("sweep"), vec![id(1)]);
    let new = store
        .claim(&request("fast", 1, 1200))
        .await
        .expect("claim")
        .remove(0);
    assert!(new.fence > old.fence);
    let err = holder
        .add_artifacts(
            &id(1),
            &[artifact("report.md", 'b'), artifact("output", 'c')],
        )
        .await
        .expect_err("a stale holder records no artifact");
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let event = NewEvent::new("step", 1, 1300, json!({"name": "late"}));
    let err = holder
        .append_events(&id(1), &[event])
        .await
        .expect_err("nor an event");
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    assert_eq!(
        store.list_artifacts(&id(1)).await.expect("list"),
        vec![artifact("report.md", 'a')],
        "what it recorded while it held the run, nothing after"
    );
}
