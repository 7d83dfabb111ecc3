//! What [`LimitStore`](crate::LimitStore) and concurrency keys promise:
//! claims never exceed a key's MAX, even with racing claimers, and keep the
//! key's order; a local claim waits its turn too; `drop` and
//! `cancel-in-progress` apply at dispatch; rate limits admit no more than
//! their window allows, settle to real tokens, and honour a 429's block.

use std::collections::HashMap;
use std::sync::Mutex;

use dispatch_core::concurrency::{Rate, RunConcurrency, Strategy};
use dispatch_core::{Status, Transition};

use super::queue::{agent_up, request};
use super::{HELPER, id, new_run, write_for};
use crate::{
    BucketLimits, Created, QueueOptions, QueueStore, RateGrant, RunExtras, Store, StoreError,
};

fn keyed(key: &str, max: u32, strategy: Strategy) -> RunExtras {
    RunExtras {
        concurrency: Some(RunConcurrency {
            key: key.to_string(),
            max,
            strategy,
        }),
        ..RunExtras::default()
    }
}

async fn enqueue_keyed<S: QueueStore>(
    store: &S,
    n: u128,
    key: &str,
    max: u32,
    s: Strategy,
) -> crate::Run {
    // The parcel is named after the key, so a listing shows each run's key.
    let created = store
        .enqueue_with(
            &new_run(id(n), key, n as i64),
            &keyed(key, max, s),
            &QueueOptions::default(),
            false,
        )
        .await
        .expect("enqueue_with");
    match created {
        Created::New(run) => run,
        Created::Existing(_) => panic!("no idempotency key: always new"),
    }
}

async fn finish<S: Store + QueueStore>(store: &S, claimed: &crate::Claimed, at: i64) {
    let running = agent_up(store, claimed, at).await;
    store
        .fenced_transition(
            &running.id,
            claimed.fence,
            running.version,
            &write_for(
                &running,
                &Transition::Exited {
                    code: 0,
                    at: at + 1,
                },
            ),
        )
        .await
        .expect("the holder finishes its run");
}

fn ids(claimed: &[crate::Claimed]) -> Vec<dispatch_core::RunId> {
    claimed.iter().map(|c| c.run.id.clone()).collect()
}

pub async fn claims_never_exceed_a_keys_max_and_keep_its_order<S: Store + QueueStore>(store: S) {
    for n in 1..=3 {
        enqueue_keyed(&store, n, "a", 1, Strategy::Queue).await;
    }
    for n in 4..=6 {
        enqueue_keyed(&store, n, "b", 2, Strategy::Queue).await;
    }
    store
        .enqueue(&new_run(id(7), "plain", 7), &QueueOptions::default())
        .await
        .expect("enqueue");
    let first = store.claim(&request("w1", 10, 100)).await.expect("claim");
    assert_eq!(
        ids(&first),
        vec![id(1), id(4), id(5), id(7)],
        "one of a, two of b, any plain"
    );
    assert_eq!(
        first[0]
            .extras
            .concurrency
            .as_ref()
            .map(|c| (c.key.as_str(), c.max)),
        Some(("a", 1)),
        "the claim hands the key over with the run"
    );
    assert!(
        store
            .claim(&request("w2", 10, 110))
            .await
            .expect("claim")
            .is_empty()
    );
    finish(&store, &first[0], 120).await;
    let next = store.claim(&request("w2", 10, 130)).await.expect("claim");
    assert_eq!(ids(&next), vec![id(2)], "a's next, in order");
    finish(&store, &first[2], 140).await;
    let next = store.claim(&request("w2", 10, 150)).await.expect("claim");
    assert_eq!(ids(&next), vec![id(6)], "b's last");
}

pub async fn racing_claimers_never_exceed_a_keys_max<S: Store + QueueStore>(store: S) {
    const RUNS: u128 = 30;
    for n in 1..=RUNS {
        let key = format!("k{}", n % 3);
        enqueue_keyed(&store, n, &key, 1, Strategy::Queue).await;
    }
    let order: Mutex<HashMap<String, Vec<u128>>> = Mutex::new(HashMap::new());
    let claimer = |worker: &'static str| {
        let (store, order) = (&store, &order);
        async move {
            let mut idle = 0;
            let mut now = 1_000;
            while idle < 50 {
                now += 1;
                let batch = store.claim(&request(worker, 3, now)).await.expect("claim");
                if batch.is_empty() {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                // What the store holds right after this claim: one live run per key at most.
                let live = store
                    .list_runs(&crate::RunFilter {
                        statuses: vec![Status::Starting, Status::Running],
                        ..Default::default()
                    })
                    .await
                    .expect("list");
                let mut per_key: HashMap<String, usize> = HashMap::new();
                for run in &live {
                    *per_key.entry(run.parcel_name.clone()).or_default() += 1;
                }
                assert!(
                    per_key.values().all(|n| *n <= 1),
                    "two live runs of a key: {per_key:?}"
                );
                for claimed in &batch {
                    let n = u128::from_str_radix(claimed.run.id.as_str(), 16).expect("hex id");
                    order
                        .lock()
                        .expect("not poisoned")
                        .entry(claimed.run.parcel_name.clone())
                        .or_default()
                        .push(n);
                }
                tokio::task::yield_now().await;
                for claimed in &batch {
                    finish(store, claimed, now).await;
                }
            }
        }
    };
    tokio::join!(claimer("a"), claimer("b"), claimer("c"));
    let order = order.into_inner().expect("not poisoned");
    let mut total = 0;
    for (key, claimed) in &order {
        let mut sorted = claimed.clone();
        sorted.sort();
        assert_eq!(
            claimed, &sorted,
            "key {key}: claimed in the order dispatched"
        );
        total += claimed.len();
    }
    assert_eq!(total, RUNS as usize, "every run was claimed once");
}

pub async fn a_local_claim_waits_for_a_slot_of_its_key<S: Store>(store: S) {
    let mut first = new_run(id(1), "p", 10);
    first.claimed_by = Some(HELPER);
    let run = match store
        .create_run_with(&first, &keyed("c", 1, Strategy::Queue), false)
        .await
        .expect("create")
    {
        Created::New(run) => run,
        Created::Existing(_) => panic!("new"),
    };
    assert_eq!(
        run.status(),
        Status::Starting,
        "a free key: created claimed"
    );
    let mut second = new_run(id(2), "p", 20);
    second.claimed_by = Some(HELPER);
    let Created::New(waiting) = store
        .create_run_with(&second, &keyed("c", 1, Strategy::Queue), false)
        .await
        .expect("create")
    else {
        panic!("new")
    };
    assert_eq!(
        waiting.status(),
        Status::Queued,
        "a busy key: created queued, not claimed"
    );
    let claim = Transition::Claim {
        helper: HELPER,
        at: 30,
    };
    let err = store
        .transition(&id(2), waiting.version, &write_for(&waiting, &claim))
        .await
        .expect_err("no slot yet");
    assert!(
        matches!(&err, StoreError::ConcurrencyLimited { key, max: 1, .. } if key == "c"),
        "{err:?}"
    );
    assert!(err.to_string().contains("concurrency key `c`"), "{err}");
    let extras = store.run_extras(&id(2)).await.expect("extras");
    assert_eq!(extras.concurrency.map(|c| c.key), Some("c".to_string()));
    // The first run ends: the second may take the slot.
    let cancel = Transition::Cancel {
        reason: "done".into(),
        exit_code: None,
        at: 40,
    };
    store
        .transition(&id(1), run.version, &write_for(&run, &cancel))
        .await
        .expect("end the first");
    let claimed = store
        .transition(&id(2), waiting.version, &write_for(&waiting, &claim))
        .await
        .expect("a free slot: claimed");
    assert_eq!(claimed.status(), Status::Starting);
}

pub async fn drop_cancels_a_run_whose_key_is_full_at_once<S: Store + QueueStore>(store: S) {
    let first = enqueue_keyed(&store, 1, "d", 1, Strategy::Drop).await;
    assert_eq!(first.status(), Status::Queued);
    let dropped = enqueue_keyed(&store, 2, "d", 1, Strategy::Drop).await;
    assert_eq!(dropped.status(), Status::Cancelled, "no slot free: dropped");
    let reason = dropped.state.reason().unwrap_or_default().to_string();
    assert!(
        reason.contains("dropped") && reason.contains("`d`"),
        "{reason}"
    );
    assert_eq!(
        store.get_run(&id(1)).await.expect("get").status(),
        Status::Queued
    );
}

pub async fn cancel_in_progress_makes_room_for_the_newest_run<S: Store + QueueStore>(store: S) {
    enqueue_keyed(&store, 1, "c", 1, Strategy::CancelInProgress).await;
    let held = store.claim(&request("w", 1, 100)).await.expect("claim");
    assert_eq!(ids(&held), vec![id(1)]);
    assert_eq!(store.concurrency_holding("c").await.expect("holding"), 1);
    assert_eq!(store.concurrency_holding("none").await.expect("holding"), 0);
    enqueue_keyed(&store, 2, "c", 1, Strategy::CancelInProgress).await;
    assert_eq!(
        store.concurrency_holding("c").await.expect("holding"),
        1,
        "a queued run holds no slot"
    );
    let live = store.get_run(&id(1)).await.expect("get");
    assert!(
        live.stop_requested_at.is_some(),
        "the live run is asked to stop"
    );
    assert_eq!(
        store.concurrency_stopping("c").await.expect("stopping"),
        vec![id(1)]
    );
    // A third one cancels the second (still queued) at once.
    enqueue_keyed(&store, 3, "c", 1, Strategy::CancelInProgress).await;
    let second = store.get_run(&id(2)).await.expect("get");
    assert_eq!(second.status(), Status::Cancelled);
    assert!(
        second
            .state
            .reason()
            .unwrap_or_default()
            .contains("cancel-in-progress")
    );
    assert!(
        store
            .claim(&request("w", 5, 200))
            .await
            .expect("claim")
            .is_empty(),
        "1 still live"
    );
    finish(&store, &held[0], 300).await;
    let next = store.claim(&request("w", 5, 400)).await.expect("claim");
    assert_eq!(
        ids(&next),
        vec![id(3)],
        "the newest runs once the slot is free"
    );
}

pub async fn rate_limits_admit_no_more_than_their_window<S: Store>(store: S) {
    let limits = BucketLimits {
        requests: Some(Rate {
            limit: 2,
            window_ms: 1000,
        }),
        tokens: Some(Rate {
            limit: 100,
            window_ms: 1000,
        }),
    };
    let grant = |r: RateGrant| match r {
        RateGrant::Granted { grant } => grant,
        RateGrant::WaitUntil(t) => panic!("expected a grant, told to wait until {t}"),
    };
    let g1 = grant(
        store
            .rate_acquire("model:m", &limits, 10, 0)
            .await
            .expect("acquire"),
    );
    grant(
        store
            .rate_acquire("model:m", &limits, 10, 100)
            .await
            .expect("acquire"),
    );
    assert_eq!(
        store
            .rate_acquire("model:m", &limits, 10, 200)
            .await
            .expect("acquire"),
        RateGrant::WaitUntil(1000),
        "two requests a second"
    );
    // Another bucket is not affected.
    grant(
        store
            .rate_acquire("model:other", &limits, 10, 200)
            .await
            .expect("acquire"),
    );
    // The first call really used 90 tokens: with 10 more, no room for 10.
    store.rate_settle(g1, 90).await.expect("settle");
    assert_eq!(
        store
            .rate_acquire("model:m", &limits, 10, 1050)
            .await
            .expect("acquire"),
        RateGrant::Granted { grant: g1 + 3 },
        "the first request left the window"
    );
    // A 429 blocks the bucket until its retry-after.
    store.rate_block("model:m", 5000).await.expect("block");
    assert_eq!(
        store
            .rate_acquire("model:m", &limits, 1, 3000)
            .await
            .expect("acquire"),
        RateGrant::WaitUntil(5000)
    );
    grant(
        store
            .rate_acquire("model:m", &limits, 1, 5000)
            .await
            .expect("acquire"),
    );
}
