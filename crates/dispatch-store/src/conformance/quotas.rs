//! What [`QuotaStore`] promises: quotas are kept per project and limit,
//! replaced and removed; claims (a worker's, a local helper's, one at
//! creation) never take a project over its live-run cap, even with racing
//! claimers.

use std::sync::atomic::{AtomicUsize, Ordering};

use dispatch_core::quota::{OnHard, Quota, QuotaLimit};
use dispatch_core::{Status, Transition};

use super::queue::{agent_up, request};
use super::{HELPER, id, new_run, write_for};
use crate::{Created, QueueOptions, QueueStore, QuotaStore, RunExtras, Store, StoreError};

fn quota(project: &str, limit: QuotaLimit, value: f64) -> Quota {
    Quota {
        project: project.to_string(),
        limit,
        value,
        soft_pct: 80,
        on_hard: OnHard::Wait,
        updated_at: 5,
    }
}

async fn enqueue_in<S: QueueStore>(store: &S, n: u128, project: &str) {
    let mut new = new_run(id(n), "p", n as i64);
    new.project = project.to_string();
    store
        .enqueue(&new, &QueueOptions::default())
        .await
        .expect("enqueue");
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

pub async fn quotas_are_kept_per_project_and_limit_replaced_and_removed<S: Store + QuotaStore>(
    store: S,
) {
    assert_eq!(store.list_quotas(&[]).await.expect("list"), vec![]);
    let mut refuse = quota("b", QuotaLimit::UsdPerMonth, 500.0);
    refuse.on_hard = OnHard::Refuse;
    refuse.soft_pct = 90;
    store
        .set_quotas(&[
            quota("b", QuotaLimit::MaxLiveRuns, 10.0),
            refuse.clone(),
            quota("a", QuotaLimit::TokensPerDay, 2e6),
        ])
        .await
        .expect("set");
    let all = store.list_quotas(&[]).await.expect("list");
    assert_eq!(
        all,
        vec![
            quota("a", QuotaLimit::TokensPerDay, 2e6),
            quota("b", QuotaLimit::MaxLiveRuns, 10.0),
            refuse.clone(),
        ],
        "by project, then limit, with every field as set"
    );
    // Setting a limit again replaces it; the others stay.
    let raised = Quota {
        value: 750.5,
        updated_at: 9,
        ..refuse.clone()
    };
    store
        .set_quotas(std::slice::from_ref(&raised))
        .await
        .expect("raise");
    let b = store.list_quotas(&["b".to_string()]).await.expect("list b");
    assert_eq!(
        b,
        vec![quota("b", QuotaLimit::MaxLiveRuns, 10.0), raised],
        "only b's, the USD limit replaced"
    );
    assert_eq!(
        store
            .remove_quotas("b", Some(QuotaLimit::MaxLiveRuns))
            .await
            .expect("rm one"),
        1
    );
    assert_eq!(
        store
            .remove_quotas("b", Some(QuotaLimit::MaxLiveRuns))
            .await
            .expect("rm again"),
        0,
        "nothing left to remove"
    );
    assert_eq!(store.remove_quotas("b", None).await.expect("rm all"), 1);
    assert_eq!(
        store.list_quotas(&[]).await.expect("list"),
        vec![quota("a", QuotaLimit::TokensPerDay, 2e6)]
    );
    assert_eq!(store.live_runs("a").await.expect("live"), 0);
}

pub async fn claims_never_take_a_project_over_its_live_run_cap<
    S: Store + QueueStore + QuotaStore,
>(
    store: S,
) {
    store
        .set_quotas(&[quota("capped", QuotaLimit::MaxLiveRuns, 2.0)])
        .await
        .expect("set");
    for n in 1..=4 {
        enqueue_in(&store, n, "capped").await;
    }
    enqueue_in(&store, 5, "free").await;
    enqueue_in(&store, 6, "free").await;
    let first = store.claim(&request("w", 10, 100)).await.expect("claim");
    let mut got: Vec<_> = first.iter().map(|c| c.run.id.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        vec![id(1), id(2), id(5), id(6)],
        "two of the capped project (the oldest), every run of the other"
    );
    assert_eq!(store.live_runs("capped").await.expect("live"), 2);
    assert!(
        store
            .claim(&request("w", 10, 101))
            .await
            .expect("claim")
            .is_empty(),
        "the project is at its cap"
    );
    // A local claim (a helper's compare-and-set) is refused too, naming the cap.
    let queued = store.get_run(&id(3)).await.expect("get");
    let claim = Transition::Claim {
        helper: HELPER,
        at: 102,
    };
    let err = store
        .transition(&id(3), queued.version, &write_for(&queued, &claim))
        .await
        .expect_err("at the cap");
    assert!(
        matches!(&err, StoreError::QuotaLimited { project, why, .. } if project == "capped" && why == "2/2 live runs"),
        "{err:?}"
    );
    assert!(err.to_string().contains("2/2 live runs"), "{err}");
    // A run made held by its helper is made queued while the project is full.
    let mut held = new_run(id(7), "p", 103);
    held.project = "capped".to_string();
    held.claimed_by = Some(HELPER);
    let Created::New(made) = store
        .create_run_with(&held, &RunExtras::default(), false)
        .await
        .expect("create")
    else {
        panic!("new")
    };
    assert_eq!(made.status(), Status::Queued, "no slot: created queued");
    // One capped run ends: exactly one more may go.
    let capped = first
        .iter()
        .find(|c| c.run.project == "capped")
        .expect("a capped run");
    finish(&store, capped, 110).await;
    let next = store.claim(&request("w", 10, 120)).await.expect("claim");
    assert_eq!(
        next.iter().map(|c| c.run.id.clone()).collect::<Vec<_>>(),
        vec![id(3)],
        "one slot freed: one run, the oldest"
    );
    // Raised: the held-at-creation kind and the last queued one go too.
    store
        .set_quotas(&[quota("capped", QuotaLimit::MaxLiveRuns, 4.0)])
        .await
        .expect("raise");
    let queued = store.get_run(&id(7)).await.expect("get");
    store
        .transition(&id(7), queued.version, &write_for(&queued, &claim))
        .await
        .expect("a slot after the raise");
    let last = store.claim(&request("w", 10, 130)).await.expect("claim");
    assert_eq!(
        last.iter().map(|c| c.run.id.clone()).collect::<Vec<_>>(),
        vec![id(4)]
    );
    assert_eq!(store.live_runs("capped").await.expect("live"), 4);
    // Without the cap, a run made held is made held.
    store.remove_quotas("capped", None).await.expect("remove");
    let mut held = new_run(id(8), "p", 140);
    held.project = "capped".to_string();
    held.claimed_by = Some(HELPER);
    let made = store
        .create_run_with(&held, &RunExtras::default(), false)
        .await
        .expect("create");
    assert_eq!(made.run().status(), Status::Starting);
}

pub async fn racing_claimers_never_exceed_a_projects_live_run_cap<
    S: Store + QueueStore + QuotaStore,
>(
    store: S,
) {
    const RUNS: u128 = 30;
    const CAP: u32 = 3;
    store
        .set_quotas(&[quota("p", QuotaLimit::MaxLiveRuns, f64::from(CAP))])
        .await
        .expect("set");
    for n in 1..=RUNS {
        enqueue_in(&store, n, "p").await;
    }
    let claimed_total = AtomicUsize::new(0);
    let claimer = |worker: &'static str| {
        let (store, claimed_total) = (&store, &claimed_total);
        async move {
            let mut idle = 0;
            let mut now = 1_000;
            while idle < 50 {
                now += 1;
                let batch = store.claim(&request(worker, 2, now)).await.expect("claim");
                if batch.is_empty() {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                let live = store.live_runs("p").await.expect("live");
                assert!(live <= CAP, "{live} live runs over a cap of {CAP}");
                claimed_total.fetch_add(batch.len(), Ordering::SeqCst);
                tokio::task::yield_now().await;
                for claimed in &batch {
                    finish(store, claimed, now).await;
                }
            }
        }
    };
    tokio::join!(claimer("a"), claimer("b"), claimer("c"));
    assert_eq!(
        claimed_total.load(Ordering::SeqCst),
        RUNS as usize,
        "every run was claimed once"
    );
}

/// 2026-11-20T10:00:00Z, in ms.
const T: i64 = 1_795_168_800_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

fn usage(tokens: u64, cost: f64, at: i64) -> dispatch_core::NewEvent {
    dispatch_core::NewEvent::of(
        dispatch_core::RunEvent::Usage(serde_json::json!({
            "input_tokens": tokens, "output_tokens": 0, "cost_usd": cost
        })),
        1,
        at,
    )
}

pub async fn budgets_count_the_periods_usage_notify_once_and_hold_claims<
    S: Store + QueueStore + QuotaStore + crate::NotificationStore,
>(
    store: S,
) {
    // Spend before the quota exists counts: the period is what `usage` sums.
    let mut first = new_run(id(1), "p", T);
    first.project = "b".to_string();
    store
        .enqueue(&first, &QueueOptions::default())
        .await
        .expect("enqueue");
    store
        .append_events(&id(1), &[usage(300, 0.1, T + 1)])
        .await
        .expect("usage");
    let mut daily = quota("b", QuotaLimit::TokensPerDay, 1000.0);
    daily.updated_at = T + 2;
    store.set_quotas(&[daily]).await.expect("set");
    let used = store
        .quota_use(&["b".to_string()], T + 3)
        .await
        .expect("use");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].used, 300.0, "seeded from the day's usage events");
    assert_eq!(used[0].period.as_deref(), Some("2026-11-20"));
    // Past 80 %: one soft notification and one event, however many calls follow.
    for (n, tokens) in [(0, 550), (1, 10)] {
        store
            .append_events(&id(1), &[usage(tokens, 0.0, T + 10 + n)])
            .await
            .expect("usage");
    }
    let soft: Vec<_> = store
        .list_notifications(100)
        .await
        .expect("list")
        .into_iter()
        .filter(|n| n.kind.starts_with("quota."))
        .collect();
    assert_eq!(soft.len(), 1, "{soft:#?}");
    assert_eq!(soft[0].kind, "quota.soft");
    assert_eq!(soft[0].key, "quota.soft:b:tokens_per_day:2026-11-20");
    assert_eq!(soft[0].data["used"], 850.0);
    assert_eq!(soft[0].data["value"], 1000.0);
    let marks = store
        .list_events(&id(1), 0, 100)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.event.is(dispatch_core::EventKind::Quota))
        .count();
    assert_eq!(marks, 1, "one quota event on the run that crossed the mark");
    // Still under the hard limit: a new run is claimed.
    let mut second = new_run(id(2), "p", T + 20);
    second.project = "b".to_string();
    store
        .enqueue(&second, &QueueOptions::default())
        .await
        .expect("enqueue");
    let mut got: Vec<_> = store
        .claim(&request("w", 10, T + 21))
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    got.sort();
    assert_eq!(got, vec![id(1), id(2)]);
    // At the hard limit: `quota.hard`, and a queued run waits.
    store
        .append_events(&id(1), &[usage(150, 0.0, T + 30)])
        .await
        .expect("usage");
    let mut third = new_run(id(3), "p", T + 31);
    third.project = "b".to_string();
    let queued = store
        .enqueue(&third, &QueueOptions::default())
        .await
        .expect("a `wait` budget queues new runs");
    assert!(
        store
            .claim(&request("w", 10, T + 32))
            .await
            .expect("claim")
            .is_empty(),
        "over the day's budget"
    );
    let claim = Transition::Claim {
        helper: HELPER,
        at: T + 33,
    };
    let err = store
        .transition(&id(3), queued.version, &write_for(&queued, &claim))
        .await
        .expect_err("over budget");
    assert!(
        err.to_string()
            .contains("tokens_per_day 1010/1000 tokens today (UTC)"),
        "{err}"
    );
    let hard = store
        .list_notifications(100)
        .await
        .expect("list")
        .into_iter()
        .filter(|n| n.kind == "quota.hard")
        .count();
    assert_eq!(hard, 1);
    // The next UTC day the budget is fresh: the run goes.
    let next_day = store
        .claim(&request("w", 10, T + DAY_MS))
        .await
        .expect("claim");
    assert_eq!(
        next_day
            .iter()
            .map(|c| c.run.id.clone())
            .collect::<Vec<_>>(),
        vec![id(3)]
    );
}

pub async fn a_project_over_a_refusing_budget_takes_no_new_run_until_raised<
    S: Store + QueueStore + QuotaStore,
>(
    store: S,
) {
    let mut monthly = quota("c", QuotaLimit::UsdPerMonth, 1.0);
    monthly.on_hard = OnHard::Refuse;
    monthly.updated_at = T;
    store.set_quotas(&[monthly.clone()]).await.expect("set");
    let mut first = new_run(id(1), "p", T + 1);
    first.project = "c".to_string();
    store
        .enqueue(&first, &QueueOptions::default())
        .await
        .expect("under budget");
    store
        .append_events(&id(1), &[usage(10, 1.5, T + 2)])
        .await
        .expect("usage");
    let mut second = new_run(id(2), "p", T + 3);
    second.project = "c".to_string();
    let err = store
        .enqueue(&second, &QueueOptions::default())
        .await
        .expect_err("over a refusing budget");
    assert!(
        matches!(&err, StoreError::QuotaExceeded { project, limit: QuotaLimit::UsdPerMonth, .. } if project == "c"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("usd_per_month: $1.50 USD this month (UTC) used of $1.00"),
        "{err}"
    );
    assert!(
        matches!(store.get_run(&id(2)).await, Err(StoreError::NotFound(_))),
        "nothing was created"
    );
    // Another project is not concerned; a raise lets the project go on.
    let mut other = new_run(id(3), "p", T + 4);
    other.project = "d".to_string();
    store
        .enqueue(&other, &QueueOptions::default())
        .await
        .expect("another project");
    store
        .set_quotas(&[Quota {
            value: 5.0,
            updated_at: T + 5,
            ..monthly
        }])
        .await
        .expect("raise");
    second.created_at = T + 6;
    store
        .enqueue(&second, &QueueOptions::default())
        .await
        .expect("after the raise");
}
