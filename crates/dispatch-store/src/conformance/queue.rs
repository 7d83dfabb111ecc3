//! What a [`QueueStore`] promises: claims ordered and exclusive, leases that
//! expire back to the queue without consuming an attempt, fenced writes.

use dispatch_core::EventKind;
use std::collections::HashSet;

use dispatch_core::{NewEvent, ProcRef, Status, Transition};
use serde_json::json;

use super::{AGENT, all_events, create, id, new_run, write_for};
use crate::{
    ClaimRequest, Claimed, HeldWrites, NoopStore, QueueStore, QueueTimes, Run, Store, StoreError,
};

/// The worker process recorded by test claims.
pub const WORKER: ProcRef = ProcRef {
    pid: 4200,
    start_ticks: 9,
};

/// A claim by `worker` of up to `limit` runs at `now`, leased for 1000 ms.
pub fn request(worker: &str, limit: usize, now: i64) -> ClaimRequest {
    ClaimRequest {
        worker: worker.to_string(),
        helper: WORKER,
        limit,
        now,
        lease_ms: 1000,
        labels: Vec::new(),
        free: None,
    }
}

pub(super) async fn claim_all<S: QueueStore>(
    store: &S,
    worker: &str,
    limit: usize,
    now: i64,
) -> Vec<Claimed> {
    store
        .claim(&request(worker, limit, now))
        .await
        .expect("claiming succeeds")
}

/// The holder of `claimed` starts its agent at `started`, then at `at`
/// sends it back to the queue for a retry not before `not_before`.
pub(super) async fn retry_later<S: Store + QueueStore>(
    store: &S,
    claimed: &Claimed,
    started: i64,
    at: i64,
    not_before: i64,
) -> Run {
    let running = agent_up(store, claimed, started).await;
    let requeue = Transition::Requeue {
        not_before: Some(not_before),
        at,
    };
    store
        .fenced_transition(
            &claimed.run.id,
            claimed.fence,
            running.version,
            &write_for(&running, &requeue),
        )
        .await
        .expect("the holder requeues for a retry")
}

/// Takes a claimed run on to `running` as its holder would.
pub(super) async fn agent_up<S: Store + QueueStore>(store: &S, claimed: &Claimed, at: i64) -> Run {
    let t = Transition::AgentStarted { agent: AGENT, at };
    store
        .fenced_transition(
            &claimed.run.id,
            claimed.fence,
            claimed.run.version,
            &write_for(&claimed.run, &t),
        )
        .await
        .expect("the holder moves its run on")
}

pub async fn claims_take_the_highest_priority_then_the_oldest<S: Store + QueueStore>(store: S) {
    for n in 1..=4 {
        create(&store, new_run(id(n), "p", n as i64 * 10)).await;
    }
    store.set_priority(&id(3), 5).await.expect("set priority");
    let claimed = claim_all(&store, "w1", 2, 100).await;
    let ids: Vec<_> = claimed.iter().map(|c| c.run.id.clone()).collect();
    assert_eq!(ids, vec![id(3), id(1)], "priority first, then age");
    for c in &claimed {
        assert_eq!(c.run.status(), Status::Starting);
        assert_eq!(c.run.state.helper(), Some(WORKER));
        assert_eq!(c.run.version, 2);
        assert_eq!(c.run.attempt, 1);
        let lease = store.lease(&c.run.id).await.expect("lease").expect("held");
        assert_eq!(lease.owner, "w1");
        assert_eq!(lease.expires_at, 1100);
        assert_eq!(lease.fence, c.fence);
        let events = all_events(&store, &c.run.id).await;
        let last = events.last().expect("the claim recorded an event");
        assert_eq!(last.event.kind, "state");
        assert_eq!(last.event.data["to"], json!("starting"));
        assert_eq!(last.event.data["worker"], json!("w1"));
    }
    let rest = claim_all(&store, "w2", 10, 100).await;
    let ids: Vec<_> = rest.iter().map(|c| c.run.id.clone()).collect();
    assert_eq!(
        ids,
        vec![id(2), id(4)],
        "the claimed ones are not offered again"
    );
    assert!(
        claim_all(&store, "w3", 10, 100).await.is_empty(),
        "nothing is left"
    );
    let err = store
        .set_priority(&id(99), 1)
        .await
        .expect_err("unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
}

pub async fn three_claimers_racing_over_1000_runs_claim_each_exactly_once<S: Store + QueueStore>(
    store: S,
) {
    const RUNS: u128 = 1000;
    for n in 1..=RUNS {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    async fn claimer<S: QueueStore>(store: &S, worker: &str) -> Vec<Claimed> {
        let mut mine = Vec::new();
        loop {
            let batch = claim_all(store, worker, 25, 10_000).await;
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch);
            // Let the other claimers in between batches.
            tokio::task::yield_now().await;
        }
    }
    let (a, b, c) = tokio::join!(
        claimer(&store, "a"),
        claimer(&store, "b"),
        claimer(&store, "c")
    );
    let mut seen = HashSet::new();
    for claimed in a.iter().chain(&b).chain(&c) {
        assert!(
            seen.insert(claimed.run.id.clone()),
            "run {} was claimed twice",
            claimed.run.id
        );
    }
    assert_eq!(seen.len(), RUNS as usize, "every run was claimed");
    let queued = store
        .list_runs(&crate::RunFilter {
            statuses: vec![Status::Queued],
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(queued.is_empty(), "none is left in the queue");
}

pub async fn a_stolen_lease_cannot_write<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let old = claim_all(&store, "slow", 1, 100).await.remove(0);
    assert_eq!(store.sweep_expired(1101).await.expect("sweep"), vec![id(1)]);
    let new = claim_all(&store, "fast", 1, 1200).await.remove(0);
    assert!(new.fence > old.fence, "every claim bumps the token");

    let t = Transition::AgentStarted {
        agent: AGENT,
        at: 1300,
    };
    // The old holder even knows the current version: the token still stops it.
    let err = store
        .fenced_transition(&id(1), old.fence, new.run.version, &write_for(&new.run, &t))
        .await
        .expect_err("a stale token cannot move the run");
    assert!(
        matches!(&err, StoreError::Fenced { id: got, fence } if *got == id(1) && *fence == old.fence),
        "Fenced naming the run and token, got {err:?}"
    );
    let note = NewEvent::new(EventKind::Step, 1, 1300, json!({"from": "the old holder"}));
    let err = store
        .fenced_append_events(&id(1), old.fence, &[note])
        .await
        .expect_err("a stale token cannot append");
    assert!(matches!(err, StoreError::Fenced { .. }), "got {err:?}");
    let err = store
        .release(&id(1), old.fence, 1300, "draining")
        .await
        .expect_err("a stale token cannot release");
    assert!(matches!(err, StoreError::Fenced { .. }), "got {err:?}");
    assert_eq!(
        store.get_run(&id(1)).await.expect("get"),
        new.run,
        "the run is as the new holder left it"
    );
    let running = agent_up(&store, &new, 1300).await;
    assert_eq!(running.status(), Status::Running, "the new holder writes");
}

pub async fn a_stolen_lease_cannot_write_several_transitions<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let old = claim_all(&store, "slow", 1, 100).await.remove(0);
    assert_eq!(store.sweep_expired(1101).await.expect("sweep"), vec![id(1)]);
    let new = claim_all(&store, "fast", 1, 1200).await.remove(0);
    let up = write_for(
        &new.run,
        &Transition::AgentStarted {
            agent: AGENT,
            at: 1300,
        },
    );
    let mut running = new.run.clone();
    running.state = up.state.clone();
    let down = write_for(&running, &Transition::Exited { code: 0, at: 1301 });
    let writes = [up, down];
    let err = store
        .fenced_transitions(&id(1), old.fence, new.run.version, &writes)
        .await
        .expect_err("a stale token cannot move the run");
    assert!(matches!(err, StoreError::Fenced { .. }), "got {err:?}");
    assert_eq!(store.get_run(&id(1)).await.expect("get"), new.run);
    let done = store
        .fenced_transitions(&id(1), new.fence, new.run.version, &writes)
        .await
        .expect("the holder saves both at once");
    assert_eq!(done.status(), Status::Succeeded);
    assert_eq!(
        store.lease(&id(1)).await.expect("lease"),
        None,
        "a finished run ends its lease"
    );
}

pub async fn an_expired_lease_is_an_attempt_of_its_own_that_does_not_count<
    S: Store + QueueStore,
>(
    store: S,
) {
    create(&store, new_run(id(1), "p", 10)).await;
    create(&store, new_run(id(2), "p", 20)).await;
    let claimed = claim_all(&store, "w1", 2, 100).await;
    let running = agent_up(&store, &claimed[0], 150).await;
    assert_eq!(running.attempt, 1);
    assert!(
        store.sweep_expired(1100).await.expect("sweep").is_empty(),
        "a lease is good until its expiry"
    );
    let mut swept = store.sweep_expired(1101).await.expect("sweep");
    swept.sort();
    assert_eq!(swept, vec![id(1), id(2)]);
    for n in [1, 2] {
        let run = store.get_run(&id(n)).await.expect("get");
        assert_eq!(run.status(), Status::Queued);
        assert_eq!(run.attempt, 2, "the next execution is the next attempt");
        assert_eq!(store.lease(&id(n)).await.expect("lease"), None);
        let last = all_events(&store, &id(n)).await.pop().expect("an event");
        assert_eq!(last.event.kind, "state");
        assert_eq!(last.event.attempt, 1);
        assert_eq!(last.event.data["to"], json!("queued"));
        assert_eq!(last.event.data["reason"], json!("lease expired"));
        assert_eq!(last.event.data["worker"], json!("w1"));
        assert_eq!(last.event.data["lost"], json!(true), "not counted");
        assert_eq!(last.event.data["attempt_consumed"], json!(false));
        // Each execution is an attempt row: started when the agent started
        // (run 1) or, never started, at the claim (run 2); ended by the sweep.
        let attempts = store.list_attempts(&id(n)).await.expect("attempts");
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        let lost = &attempts[0];
        assert_eq!(lost.number, 1);
        assert_eq!(lost.started_at, if n == 1 { 150 } else { 100 });
        assert_eq!(lost.ended_at, Some(1101));
        assert_eq!(lost.status, Some(Status::Failed));
        assert_eq!(lost.worker.as_deref(), Some("w1"));
        let error = lost.error.as_deref().expect("a reason");
        assert!(
            error.contains("lease expired") && error.contains("w1"),
            "{error}"
        );
    }
    let again = claim_all(&store, "w2", 2, 1200).await;
    assert_eq!(again.len(), 2, "both are claimable again");
    assert!(again.iter().all(|c| c.run.attempt == 2));
    let up = agent_up(&store, &again[0], 1250).await;
    assert_eq!(up.attempt, 2);
    let attempts = store.list_attempts(&up.id).await.expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1].number, 2);
    assert_eq!(attempts[1].started_at, 1250);
    assert_eq!(attempts[1].ended_at, None);
    assert_eq!(attempts[1].worker.as_deref(), Some("w2"));
    assert!(store.sweep_expired(1201).await.expect("sweep").is_empty());
}

pub async fn renewal_extends_only_the_leases_still_held<S: Store + QueueStore>(store: S) {
    for n in 1..=3 {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    let claimed = claim_all(&store, "w1", 3, 100).await;
    let held: Vec<_> = claimed
        .iter()
        .map(|c| (c.run.id.clone(), c.fence))
        .collect();
    // Run 3 is lost to a sweep and claimed by someone else.
    let mut renewed = store.renew_leases("w1", &held, 5000).await.expect("renew");
    renewed.sort();
    assert_eq!(renewed, vec![id(1), id(2), id(3)]);
    assert!(
        store.sweep_expired(4000).await.expect("sweep").is_empty(),
        "renewed"
    );
    let stale = vec![(id(1), claimed[0].fence + 7), (id(2), claimed[1].fence)];
    assert_eq!(
        store.renew_leases("w2", &stale, 9000).await.expect("renew"),
        Vec::<dispatch_core::RunId>::new(),
        "another worker's leases are not renewed"
    );
    assert_eq!(
        store.renew_leases("w1", &stale, 9000).await.expect("renew"),
        vec![id(2)],
        "a stale token is not renewed"
    );
    let lease = store.lease(&id(2)).await.expect("lease").expect("held");
    assert_eq!(lease.expires_at, 9000);
    assert!(
        store
            .renew_leases("w1", &[], 9000)
            .await
            .expect("renew")
            .is_empty()
    );
}

pub async fn a_released_run_goes_back_to_the_queue_and_fences_its_holder<S: Store + QueueStore>(
    store: S,
) {
    create(&store, new_run(id(1), "p", 10)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let run = store
        .release(&id(1), claimed.fence, 200, "worker draining")
        .await
        .expect("the holder releases");
    assert_eq!(run.status(), Status::Queued);
    assert_eq!(run.attempt, 2, "the next execution is the next attempt");
    let last = all_events(&store, &id(1)).await.pop().expect("an event");
    assert_eq!(last.event.data["reason"], json!("worker draining"));
    assert_eq!(last.event.data["lost"], json!(true), "not counted");
    let attempts = store.list_attempts(&id(1)).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].ended_at, Some(200));
    assert_eq!(attempts[0].worker.as_deref(), Some("w1"));
    let err = store
        .fenced_transition(
            &id(1),
            claimed.fence,
            run.version,
            &write_for(
                &run,
                &Transition::Claim {
                    helper: WORKER,
                    at: 300,
                },
            ),
        )
        .await
        .expect_err("released means no longer held");
    assert!(matches!(err, StoreError::Fenced { .. }), "got {err:?}");
    assert_eq!(claim_all(&store, "w2", 1, 300).await.len(), 1);
}

pub async fn a_finished_run_ends_its_lease<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let running = agent_up(&store, &claimed, 150).await;
    let done = store
        .fenced_transition(
            &id(1),
            claimed.fence,
            running.version,
            &write_for(&running, &Transition::Exited { code: 0, at: 200 }),
        )
        .await
        .expect("the holder finishes its run");
    assert_eq!(done.status(), Status::Succeeded);
    assert_eq!(store.lease(&id(1)).await.expect("lease"), None);
    assert!(store.sweep_expired(99_999).await.expect("sweep").is_empty());
    assert!(
        store
            .renew_leases("w1", &[(id(1), claimed.fence)], 5000)
            .await
            .expect("renew")
            .is_empty(),
        "a finished run's lease is not renewed"
    );
}

pub async fn a_run_waiting_out_a_backoff_is_not_claimed_early<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let queued = retry_later(&store, &claimed, 150, 200, 5000).await;
    assert_eq!(queued.attempt, 2, "a retry is a new attempt");
    assert!(
        claim_all(&store, "w2", 1, 4999).await.is_empty(),
        "not before 5000"
    );
    let again = claim_all(&store, "w2", 1, 5000).await;
    assert_eq!(again.len(), 1);
    assert!(again[0].fence > claimed.fence);
}

pub async fn queue_times_name_the_next_backoff_end_and_lease_expiry<S: Store + QueueStore>(
    store: S,
) {
    let idle = store.queue_times(100).await.expect("queue times");
    assert_eq!(idle, QueueTimes::default(), "an empty queue needs nobody");
    create(&store, new_run(id(1), "p", 10)).await;
    create(&store, new_run(id(2), "p", 11)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let times = store.queue_times(100).await.expect("queue times");
    assert_eq!(
        times,
        QueueTimes {
            next_ready_at: None,
            next_lease_expiry: Some(1100),
            next_queue_deadline: None,
        },
        "a ready run is not a future one; the lease ends at 100 + 1000"
    );
    retry_later(&store, &claimed, 150, 200, 5000).await;
    let times = store.queue_times(300).await.expect("queue times");
    assert_eq!(times.next_ready_at, Some(5000), "the retry's backoff ends");
    assert_eq!(times.next_lease_expiry, None, "a requeued run is not held");
    let times = store.queue_times(5000).await.expect("queue times");
    assert_eq!(times.next_ready_at, None, "due now is not in the future");
}

pub async fn succeeding_at_once_finishes_only_runs_still_held_and_not_stopped<
    S: Store + QueueStore + NoopStore,
>(
    store: S,
) {
    for n in 1..=4 {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    let claimed = claim_all(&store, "w1", 4, 100).await;
    let held: Vec<_> = claimed
        .iter()
        .map(|c| (c.run.id.clone(), c.fence))
        .collect();
    store.request_stop(&id(2), 150).await.expect("stop");
    let mut stale = held.clone();
    stale[2].1 += 1; // run 3 with a wrong token
    let mut done = store.succeed_at_once(&stale, 200).await.expect("succeed");
    done.sort();
    assert_eq!(
        done,
        vec![id(1), id(4)],
        "held, current token, no stop request"
    );
    let run = store.get_run(&id(1)).await.expect("get");
    assert_eq!(run.status(), Status::Succeeded);
    assert_eq!(run.state.exit_code(), Some(0));
    assert_eq!(run.version, claimed[0].run.version + 2, "two state changes");
    assert_eq!(store.lease(&id(1)).await.expect("lease"), None);
    let attempts = store.list_attempts(&id(1)).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(Status::Succeeded));
    assert_eq!(attempts[0].exit_code, Some(0));
    let tos: Vec<_> = all_events(&store, &id(1))
        .await
        .iter()
        .map(|e| e.event.data["to"].clone())
        .collect();
    assert_eq!(
        tos,
        vec![
            json!(null),
            json!("starting"),
            json!("running"),
            json!("succeeded")
        ]
    );
    for n in [2, 3] {
        let run = store.get_run(&id(n)).await.expect("get");
        assert_eq!(run.status(), Status::Starting, "run {n} left as it was");
    }
}

pub async fn labelled_runs_go_only_to_workers_with_those_labels<S: Store + QueueStore>(store: S) {
    let options = |labels: &[&str]| crate::QueueOptions {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    };
    for (n, labels) in [(1, vec!["gpu"]), (2, vec!["gpu", "eu"]), (3, vec![])] {
        store
            .enqueue(&new_run(id(n), "p", n as i64), &options(&labels))
            .await
            .expect("enqueue");
    }
    store
        .enqueue(
            &new_run(id(4), "p", 4),
            &crate::QueueOptions {
                priority: 9,
                ..Default::default()
            },
        )
        .await
        .expect("enqueue with a priority");
    let claim = |worker: &str, labels: &[&str]| {
        let mut r = request(worker, 10, 100);
        r.labels = labels.iter().map(|l| l.to_string()).collect();
        r
    };
    let plain: Vec<_> = store
        .claim(&claim("plain", &[]))
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(
        plain,
        vec![id(4), id(3)],
        "unlabelled runs only, priority first"
    );
    let gpu: Vec<_> = store
        .claim(&claim("gpu", &["gpu", "us"]))
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(gpu, vec![id(1)], "not the run that also needs eu");
    let both: Vec<_> = store
        .claim(&claim("both", &["eu", "gpu"]))
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(both, vec![id(2)]);
    let err = store
        .enqueue(&new_run(id(1), "p", 1), &options(&[]))
        .await
        .expect_err("a duplicate id");
    assert!(matches!(err, StoreError::Conflict { .. }), "got {err:?}");
}

pub async fn a_run_requeued_by_someone_else_fences_its_old_holder<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let running = agent_up(&store, &claimed, 150).await;
    // Someone without the token (an operator, a reconciler) requeues it.
    let requeue = Transition::Requeue {
        not_before: None,
        at: 200,
    };
    let queued = store
        .transition(&id(1), running.version, &write_for(&running, &requeue))
        .await
        .expect("a plain transition");
    assert_eq!(store.lease(&id(1)).await.expect("lease"), None);
    let t = Transition::Claim {
        helper: WORKER,
        at: 300,
    };
    let err = store
        .fenced_transition(
            &id(1),
            claimed.fence,
            queued.version,
            &write_for(&queued, &t),
        )
        .await
        .expect_err("the old holder no longer holds it");
    assert!(matches!(err, StoreError::Fenced { .. }), "got {err:?}");
}

pub async fn callbacks_are_due_once_the_run_finished_and_held_while_delivered<
    S: Store + QueueStore + NoopStore + crate::CallbackStore,
>(
    store: S,
) {
    let with_callback = crate::QueueOptions {
        callback_url: Some("http://127.0.0.1:9/hook".into()),
        ..Default::default()
    };
    store
        .enqueue(&new_run(id(1), "p", 10), &with_callback)
        .await
        .expect("enqueue");
    store
        .enqueue(&new_run(id(2), "p", 20), &crate::QueueOptions::default())
        .await
        .expect("enqueue");
    assert!(
        store
            .claim_callbacks(100, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not before the run has finished"
    );
    for n in [1, 2] {
        let claimed = claim_all(&store, "w", 1, 100).await.remove(0);
        store
            .succeed_at_once(&[(claimed.run.id.clone(), claimed.fence)], 150)
            .await
            .expect("finish");
        assert_eq!(claimed.run.id, id(n));
    }
    let due = store.claim_callbacks(200, 1000, 10).await.expect("claim");
    assert_eq!(
        due,
        vec![crate::DueCallback {
            run_id: id(1),
            url: "http://127.0.0.1:9/hook".into()
        }]
    );
    assert!(
        store
            .claim_callbacks(300, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "held while one server delivers it"
    );
    assert_eq!(
        store
            .claim_callbacks(1200, 1000, 10)
            .await
            .expect("claim")
            .len(),
        1,
        "due again when the deliverer went quiet"
    );
    store.finish_callback(&id(1), 1300).await.expect("finish");
    assert!(
        store
            .claim_callbacks(99_999, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "done for good"
    );
}

pub async fn stop_requests_are_found_among_the_runs_in_hand<S: Store + QueueStore>(store: S) {
    for n in 1..=3 {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    let claimed = claim_all(&store, "w1", 3, 100).await;
    assert_eq!(claimed.len(), 3);
    let held = [id(1), id(2), id(3)];
    assert!(
        store.stops_requested(&held).await.expect("look").is_empty(),
        "nobody asked yet"
    );
    store.request_stop(&id(2), 150).await.expect("stop");
    store.request_stop(&id(3), 151).await.expect("stop");
    let mut stopped = store.stops_requested(&held[..2]).await.expect("look");
    stopped.sort();
    assert_eq!(stopped, vec![id(2)], "only among the runs asked about");
    assert!(store.stops_requested(&[]).await.expect("look").is_empty());
}

/// The writes of a held run whose agent started and exited 0.
fn started_and_exited(claimed: &Claimed, at: i64) -> HeldWrites {
    let up = write_for(&claimed.run, &Transition::AgentStarted { agent: AGENT, at });
    let mut running = claimed.run.clone();
    running.state = up.state.clone();
    let down = write_for(
        &running,
        &Transition::Exited {
            code: 0,
            at: at + 1,
        },
    );
    HeldWrites {
        id: claimed.run.id.clone(),
        fence: claimed.fence,
        expected_version: claimed.run.version,
        writes: vec![up, down],
    }
}

pub async fn many_held_runs_are_saved_at_once_each_with_its_own_answer<S: Store + QueueStore>(
    store: S,
) {
    for n in 1..=3 {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    let claimed = claim_all(&store, "w1", 3, 100).await;
    let events_2 = all_events(&store, &id(2)).await;
    let events_3 = all_events(&store, &id(3)).await;
    let mut stale_fence = started_and_exited(&claimed[1], 200);
    stale_fence.fence -= 1;
    let mut stale_version = started_and_exited(&claimed[2], 200);
    stale_version.expected_version -= 1;
    let batch = [
        started_and_exited(&claimed[0], 200),
        stale_fence,
        stale_version,
    ];
    let answers = store
        .fenced_transitions_many(&batch)
        .await
        .expect("the transaction goes through");
    assert_eq!(answers.len(), 3, "one answer per run, in order");
    let done = answers[0].as_ref().expect("the held run is saved");
    assert_eq!(done.status(), Status::Succeeded);
    assert_eq!(done.version, claimed[0].run.version + 2);
    assert_eq!(store.get_run(&id(1)).await.expect("get"), *done);
    assert!(
        matches!(&answers[1], Err(StoreError::Fenced { .. })),
        "got {:?}",
        answers[1]
    );
    assert!(
        matches!(&answers[2], Err(StoreError::Conflict { .. })),
        "got {:?}",
        answers[2]
    );
    for (n, c) in claimed.iter().enumerate().skip(1) {
        assert_eq!(
            store.get_run(&c.run.id).await.expect("get"),
            c.run,
            "run {n} is as it was"
        );
    }
    assert_eq!(all_events(&store, &id(2)).await, events_2);
    assert_eq!(all_events(&store, &id(3)).await, events_3);
    let attempts = store.list_attempts(&id(1)).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(Status::Succeeded));
    assert!(
        store
            .list_attempts(&id(2))
            .await
            .expect("attempts")
            .is_empty()
    );
    assert_eq!(store.lease(&id(1)).await.expect("lease"), None);
}

pub async fn a_suspended_run_ends_its_lease_and_is_never_swept<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let running = agent_up(&store, &claimed, 150).await;
    let wait = dispatch_core::Wait {
        wait_for: dispatch_core::WaitFor::Signal,
        name: "go".into(),
        until: None,
    };
    let suspended = store
        .fenced_transition(
            &id(1),
            claimed.fence,
            running.version,
            &write_for(&running, &Transition::Suspend { wait, at: 200 }),
        )
        .await
        .expect("the holder suspends its run");
    assert_eq!(suspended.status(), Status::Paused);
    assert_eq!(
        store.lease(&id(1)).await.expect("lease"),
        None,
        "no worker holds a suspended run"
    );
    assert!(
        store.sweep_expired(99_999).await.expect("sweep").is_empty(),
        "a suspended run is not a lost one"
    );
    assert!(
        claim_all(&store, "w2", 1, 99_999).await.is_empty(),
        "nor is it claimed before it is woken"
    );
}
