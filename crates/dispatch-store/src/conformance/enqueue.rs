//! [`QueueStore::enqueue_with`]: a run created with its extras (idempotency
//! key, session, policy) and its queue options (priority, labels, callback)
//! in one transaction, deduplicated and session-checked like
//! [`ReliabilityStore::create_run_with`](crate::ReliabilityStore::create_run_with).

use serde_json::json;

use super::{id, new_run, request};
use crate::{CallbackStore, Created, DueCallback, NoopStore, QueueOptions, QueueStore, RunExtras};
use crate::{RunFilter, Store, StoreError};

const HOOK: &str = "http://127.0.0.1:9/hook";

fn extras(key: Option<&str>, session: Option<&str>) -> RunExtras {
    RunExtras {
        idempotency_key: key.map(str::to_string),
        session: session.map(str::to_string),
        policy: Some(json!({"retry": {"max_attempts": 3}, "timeouts": {"run_ms": 500}})),
        keep_workspace: session.is_some(),
        concurrency: None,
        traceparent: key
            .map(|_| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()),
        events: Vec::new(),
        review: None,
    }
}

fn options(priority: i64, labels: &[&str], callback: bool) -> QueueOptions {
    QueueOptions {
        priority,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        callback_url: callback.then(|| HOOK.to_string()),
        queue_timeout_ms: None,
        requests: Default::default(),
    }
}

async fn enqueue_with<S: QueueStore>(
    store: &S,
    n: u128,
    extras: &RunExtras,
    options: &QueueOptions,
    dedupe: bool,
) -> Created {
    store
        .enqueue_with(&new_run(id(n), "p", n as i64), extras, options, dedupe)
        .await
        .expect("enqueue_with succeeds")
}

/// Claims what a worker with `labels` may take at `now`, finishing each run
/// at once; returns their ids in claim order.
async fn claim_and_finish<S: QueueStore + NoopStore>(
    store: &S,
    labels: &[&str],
    limit: usize,
) -> Vec<crate::RunId> {
    let mut r = request("w", limit, 100);
    r.labels = labels.iter().map(|l| l.to_string()).collect();
    let claimed = store.claim(&r).await.expect("claim");
    let held: Vec<_> = claimed
        .iter()
        .map(|c| (c.run.id.clone(), c.fence))
        .collect();
    store.succeed_at_once(&held, 150).await.expect("finish");
    held.into_iter().map(|(id, _)| id).collect()
}

pub async fn enqueue_with_stores_the_extras_and_the_queue_options<
    S: Store + QueueStore + NoopStore + CallbackStore,
>(
    store: S,
) {
    // An older run with the same labels and no priority.
    store
        .enqueue(&new_run(id(1), "p", 1), &options(0, &["gpu"], false))
        .await
        .expect("enqueue");
    let stored = extras(Some("k"), Some("chat/alice"));
    let created = enqueue_with(&store, 2, &stored, &options(5, &["gpu"], true), true).await;
    let Created::New(run) = created else {
        panic!("nothing had the key yet, so the run is new: {created:?}")
    };
    assert_eq!(run.id, id(2));
    assert_eq!(run.attempt, 1);
    assert_eq!(run.labels, vec!["gpu"], "the answer carries the labels");
    assert_eq!(
        store.run_extras(&id(2)).await.expect("extras"),
        stored,
        "key, session and policy are stored with the run"
    );
    assert!(
        claim_and_finish(&store, &[], 10).await.is_empty(),
        "its labels keep it from a worker without them"
    );
    let mut r = request("w", 1, 100);
    r.labels = vec!["gpu".into()];
    let claimed = store.claim(&r).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].extras, stored, "the claim hands the extras over");
    store
        .release(&id(2), claimed[0].fence, 100, "handed back")
        .await
        .expect("release");
    assert_eq!(
        claim_and_finish(&store, &["gpu"], 1).await,
        vec![id(2)],
        "its priority puts it before the older run"
    );
    let due = store.claim_callbacks(200, 1000, 10).await.expect("claim");
    assert_eq!(
        due,
        vec![DueCallback {
            run_id: id(2),
            url: HOOK.into()
        }],
        "its callback is registered"
    );
}

pub async fn enqueue_with_a_duplicate_key_returns_the_existing_run_and_inserts_nothing<
    S: Store + QueueStore + NoopStore + CallbackStore,
>(
    store: S,
) {
    let keyed = extras(Some("k"), None);
    let Created::New(first) = enqueue_with(&store, 1, &keyed, &options(0, &[], false), true).await
    else {
        panic!("the first run is new")
    };
    let again = enqueue_with(&store, 2, &keyed, &options(9, &["gpu"], true), true).await;
    assert_eq!(again, Created::Existing(first.clone()));
    let err = store.get_run(&id(2)).await.expect_err("not inserted");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(all.len(), 1, "one run in all: {all:?}");
    assert_eq!(
        claim_and_finish(&store, &[], 10).await,
        vec![id(1)],
        "the existing run keeps its own (empty) labels"
    );
    assert!(
        store
            .claim_callbacks(200, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "the duplicate's callback was not registered"
    );
    // A succeeded run still answers; without dedupe a new run is created.
    let again = enqueue_with(&store, 3, &keyed, &options(0, &[], false), true).await;
    assert!(
        matches!(&again, Created::Existing(r) if r.id == id(1)),
        "{again:?}"
    );
    let forced = enqueue_with(&store, 4, &keyed, &options(0, &[], false), false).await;
    assert!(
        matches!(&forced, Created::New(r) if r.id == id(4)),
        "{forced:?}"
    );
    assert_eq!(
        store.run_extras(&id(4)).await.expect("extras"),
        keyed,
        "a forced run keeps the key"
    );
}

pub async fn enqueue_with_a_busy_session_is_refused_and_inserts_nothing<
    S: Store + QueueStore + NoopStore + CallbackStore,
>(
    store: S,
) {
    let session = extras(None, Some("chat/alice"));
    let Created::New(holder) =
        enqueue_with(&store, 1, &session, &options(0, &[], false), false).await
    else {
        panic!("the first run is new")
    };
    let err = store
        .enqueue_with(
            &new_run(id(2), "p", 2),
            &session,
            &options(0, &[], true),
            true,
        )
        .await
        .expect_err("the session is held");
    match err {
        StoreError::SessionBusy { session, run } => {
            assert_eq!(session, "chat/alice");
            assert_eq!(run, holder.id, "the error names the live run");
        }
        other => panic!("expected SessionBusy, got {other:?}"),
    }
    let err = store.get_run(&id(2)).await.expect_err("not inserted");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
    // The same key answers the holder itself rather than the session's refusal.
    let keyed = extras(Some("k"), Some("chat/bob"));
    let Created::New(bob) = enqueue_with(&store, 4, &keyed, &options(0, &[], false), true).await
    else {
        panic!("bob's first run is new")
    };
    let again = enqueue_with(&store, 5, &keyed, &options(0, &[], false), true).await;
    assert_eq!(again, Created::Existing(bob), "same key, same run");
    assert_eq!(claim_and_finish(&store, &[], 10).await, vec![id(1), id(4)]);
    assert!(
        store
            .claim_callbacks(200, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "the refused run's callback was not registered"
    );
    // Once the holder has ended, the session is free again.
    assert!(matches!(
        enqueue_with(&store, 6, &session, &options(0, &[], false), false).await,
        Created::New(_)
    ));
}

/// [`crate::BatchStore::enqueue_batch`]: every item as `enqueue_with`, in
/// one transaction; a failure leaves nothing of the batch.
pub async fn a_batch_is_enqueued_in_one_transaction_all_or_none<
    S: QueueStore + Store + crate::BatchStore + crate::ParcelStore,
>(
    store: S,
) {
    use crate::BatchItem;
    let item = |n: u128, key: Option<&str>| BatchItem {
        new: new_run(id(n), "p", 100 + n as i64),
        extras: extras(key, None),
        options: options(n as i64, &["gpu"], false),
        dedupe: true,
    };
    let brief = ("c".repeat(64), b"{\"brief\":1}".to_vec());
    let created = store
        .enqueue_batch(
            &[item(1, Some("k1")), item(2, None), item(3, Some("k1"))],
            std::slice::from_ref(&brief),
        )
        .await
        .expect("the batch");
    assert!(matches!(&created[0], Created::New(r) if r.id == id(1) && r.labels == ["gpu"]));
    assert!(matches!(&created[1], Created::New(r) if r.id == id(2)));
    assert!(
        matches!(&created[2], Created::Existing(r) if r.id == id(1)),
        "a key seen earlier in the batch answers that run: {created:?}"
    );
    assert_eq!(
        store.get_brief(&brief.0).await.expect("brief"),
        Some(brief.1.clone()),
        "the briefs go with the runs"
    );
    // A batch whose third run cannot be created (its id exists) leaves nothing.
    let failed = store
        .enqueue_batch(&[item(4, None), item(5, None), item(2, None)], &[])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    for n in [4, 5] {
        assert!(
            matches!(store.get_run(&id(n)).await, Err(StoreError::NotFound(_))),
            "run {n} of a failed batch was kept"
        );
    }
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(all.len(), 2);
}
