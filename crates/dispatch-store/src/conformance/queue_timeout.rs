//! What a [`QueueStore`] promises about queue timeouts: a run nobody claimed
//! in time ends `timed_out` in the queue, and each wait there counts anew.

use dispatch_core::Status;
use serde_json::json;

use super::queue::{claim_all, request, retry_later};
use super::{all_events, id, new_run};
use crate::{QueueOptions, QueueStore, Store};

fn timed(ms: i64, labels: &[&str]) -> QueueOptions {
    QueueOptions {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        queue_timeout_ms: Some(ms),
        ..QueueOptions::default()
    }
}

pub async fn a_run_nobody_claimed_in_time_times_out_in_the_queue<S: Store + QueueStore>(store: S) {
    // Only a worker with `gpu` may take run 1; none comes.
    store
        .enqueue(&new_run(id(1), "p", 100), &timed(500, &["gpu"]))
        .await
        .expect("enqueue");
    store
        .enqueue(&new_run(id(2), "p", 110), &QueueOptions::default())
        .await
        .expect("enqueue");
    let times = store.queue_times(120).await.expect("queue times");
    assert_eq!(times.next_queue_deadline, Some(600), "created at 100 + 500");
    assert!(
        store.expire_queued(600).await.expect("expire").is_empty(),
        "a run may be claimed until its deadline"
    );
    let mut late = request("late", 5, 601);
    late.labels = vec!["gpu".into()];
    let claimed = store.claim(&late).await.expect("claim");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(
        claimed[0].run.id,
        id(2),
        "past its deadline, a run is not claimed even before it is ended"
    );
    assert_eq!(store.expire_queued(601).await.expect("expire"), vec![id(1)]);
    let run = store.get_run(&id(1)).await.expect("get");
    assert_eq!(run.status(), Status::TimedOut);
    assert_eq!(run.state.started_at(), None, "it never started");
    assert_eq!(run.state.ended_at(), Some(601));
    let reason = run.state.reason().expect("a reason");
    assert!(reason.contains("queue timeout"), "{reason}");
    let last = all_events(&store, &id(1)).await.pop().expect("an event");
    assert_eq!(last.event.kind, "state");
    assert_eq!(last.event.data["from"], json!("queued"));
    assert_eq!(last.event.data["to"], json!("timed_out"));
    assert_eq!(last.event.data["queue_timeout_ms"], json!(500));

    let times = store.queue_times(700).await.expect("queue times");
    assert_eq!(times.next_queue_deadline, None, "nothing timed waits");
    assert!(
        store
            .expire_queued(10_000)
            .await
            .expect("expire")
            .is_empty()
    );
}

pub async fn a_queue_timeout_counts_each_wait_in_the_queue_anew<S: Store + QueueStore>(store: S) {
    store
        .enqueue(&new_run(id(1), "p", 100), &timed(500, &[]))
        .await
        .expect("enqueue");
    claim_all(&store, "w1", 1, 200).await;
    assert!(
        store.expire_queued(5_000).await.expect("expire").is_empty(),
        "a claimed run is not in the queue"
    );

    // Its worker is lost: back in the queue at 1300, it waits until 1800.
    assert_eq!(store.sweep_expired(1300).await.expect("sweep"), vec![id(1)]);
    let times = store.queue_times(1300).await.expect("queue times");
    assert_eq!(times.next_queue_deadline, Some(1800));
    assert!(store.expire_queued(1800).await.expect("expire").is_empty());

    // Claimed again in time, it fails and waits out a backoff until 5000:
    // the wait counts from then.
    let claimed = claim_all(&store, "w2", 1, 1700).await.remove(0);
    retry_later(&store, &claimed, 1750, 1800, 5000).await;
    let times = store.queue_times(1900).await.expect("queue times");
    assert_eq!(times.next_queue_deadline, Some(5500));
    assert!(store.expire_queued(5500).await.expect("expire").is_empty());
    assert_eq!(
        store.expire_queued(5501).await.expect("expire"),
        vec![id(1)]
    );
    let run = store.get_run(&id(1)).await.expect("get");
    assert_eq!(run.status(), Status::TimedOut);
    assert_eq!(
        run.attempt, 3,
        "it timed out waiting for its third attempt (the first was lost with its worker)"
    );
    let attempts = store.list_attempts(&id(1)).await.expect("attempts");
    assert_eq!(
        attempts.len(),
        2,
        "the lost one, the failed one; the third never started"
    );
    assert_eq!(attempts[0].worker.as_deref(), Some("w1"));
    assert_eq!(attempts[1].worker.as_deref(), Some("w2"));
}
