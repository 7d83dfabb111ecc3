//! What a [`WorkerStore`] promises: workers listed by name with what they
//! last said and the live runs they lease; old ones forgotten.

use super::queue::claim_all;
use super::{create, id, new_run};
use crate::{QueueStore, Store, WorkerBeat, WorkerStore};

fn beat(name: &str, seen_at: i64) -> WorkerBeat {
    WorkerBeat {
        name: name.to_string(),
        labels: vec!["gpu".into(), "eu".into()],
        slots: 4,
        lease_ms: 1000,
        started_at: 10,
        seen_at,
        stopped_at: None,
    }
}

pub async fn workers_are_listed_with_the_live_runs_they_hold<
    S: Store + QueueStore + WorkerStore,
>(
    store: S,
) {
    assert!(store.list_workers(0).await.expect("list").is_empty());
    store.worker_beat(&beat("w1", 100)).await.expect("beat");
    store.worker_beat(&beat("w0", 50)).await.expect("beat");
    create(&store, new_run(id(1), "p", 10)).await;
    create(&store, new_run(id(2), "p", 11)).await;
    let claimed = claim_all(&store, "w1", 2, 120).await;
    assert_eq!(claimed.len(), 2);
    store
        .worker_beat(&beat("w1", 200))
        .await
        .expect("a second beat replaces the first");
    let listed = store.list_workers(0).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|w| w.beat.name.as_str()).collect();
    assert_eq!(names, ["w0", "w1"], "by name");
    assert_eq!(listed[1].beat, beat("w1", 200));
    assert_eq!(listed[1].held, 2);
    assert_eq!(
        listed[1].renewed_at,
        Some(120),
        "the claim's lease, less its length"
    );
    assert_eq!(listed[0].held, 0);
    assert_eq!(listed[0].renewed_at, None);
    let recent = store.list_workers(100).await.expect("list");
    assert_eq!(recent.len(), 1, "only those seen since");
    let mut gone = beat("w1", 300);
    gone.stopped_at = Some(300);
    store.worker_beat(&gone).await.expect("the last beat");
    assert_eq!(
        store.list_workers(0).await.expect("list")[1]
            .beat
            .stopped_at,
        Some(300)
    );
    let week = crate::workers::FORGET_AFTER_MS;
    store
        .worker_beat(&beat("w2", 100 + week))
        .await
        .expect("a beat a week later");
    let names: Vec<String> = store
        .list_workers(0)
        .await
        .expect("list")
        .into_iter()
        .map(|w| w.beat.name)
        .collect();
    assert_eq!(
        names,
        ["w1", "w2"],
        "a worker silent for a week is forgotten"
    );
}
