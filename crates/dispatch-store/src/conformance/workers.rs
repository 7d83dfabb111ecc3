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
        host: "h1".into(),
        pid: 7,
    }
}

pub async fn workers_are_listed_with_the_live_runs_they_hold<
    S: Store + QueueStore + WorkerStore,
>(
    store: S,
) {
    assert!(store.list_workers(0).await.expect("list").is_empty());
    store
        .worker_beat(&beat("w1", 100), 0, None)
        .await
        .expect("beat");
    store
        .worker_beat(&beat("w0", 50), 0, None)
        .await
        .expect("beat");
    create(&store, new_run(id(1), "p", 10)).await;
    create(&store, new_run(id(2), "p", 11)).await;
    let claimed = claim_all(&store, "w1", 2, 120).await;
    assert_eq!(claimed.len(), 2);
    store
        .worker_beat(&beat("w1", 200), 0, None)
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
    store
        .worker_beat(&gone, 0, None)
        .await
        .expect("the last beat");
    assert_eq!(
        store.list_workers(0).await.expect("list")[1]
            .beat
            .stopped_at,
        Some(300)
    );
    let week = crate::workers::FORGET_AFTER_MS;
    store
        .worker_beat(&beat("w2", 100 + week), 0, None)
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

pub async fn a_live_workers_name_is_refused_to_another_process<S: WorkerStore>(store: S) {
    let first = beat("w", 100);
    assert!(store.worker_beat(&first, 0, None).await.expect("beat"));
    assert!(
        store
            .worker_beat(&beat("w", 150), 90, None)
            .await
            .expect("beat"),
        "its own beats go on"
    );
    let mut other = beat("w", 160);
    other.host = "h2".into();
    other.pid = 9;
    assert!(
        !other_beat(&store, &other, 100, None).await,
        "a second live worker of the name (another machine) is refused"
    );
    let listed = store.list_workers(0).await.expect("list");
    assert_eq!(
        (listed[0].beat.host.as_str(), listed[0].beat.pid),
        ("h1", 7)
    );
    let mut restarted = beat("w", 170);
    restarted.pid = 8;
    assert!(
        !other_beat(&store, &restarted, 100, Some(6)).await,
        "another pid on its host is refused while the holder runs"
    );
    assert!(
        other_beat(&store, &restarted, 100, Some(7)).await,
        "… and takes the name once the holder is known dead"
    );
    assert!(
        other_beat(&store, &other, 171, None).await,
        "a holder silent since before `stale_before` gives the name up"
    );
    let mut stopped = other.clone();
    stopped.stopped_at = Some(200);
    stopped.seen_at = 200;
    assert!(other_beat(&store, &stopped, 0, None).await, "its last beat");
    assert!(
        other_beat(&store, &beat("w", 210), 0, None).await,
        "a stopped worker's name is free"
    );
}

async fn other_beat<S: WorkerStore>(
    store: &S,
    b: &WorkerBeat,
    stale: i64,
    dead: Option<u32>,
) -> bool {
    store.worker_beat(b, stale, dead).await.expect("beat")
}
