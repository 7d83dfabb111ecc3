//! Retention: bounded batches of finished runs deleted with everything
//! stored of them, keeping what someone still has to act on.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, Operation, Status, Transition, Ts};
use serde_json::json;

use super::{all_events, create, id, new_run, start, step};
use crate::{
    Approval, Artifact, CallbackStore, DeadLetter, LogArchive, ParcelStore, QueueOptions,
    QueueStore, RetentionStore, Run, RunFilter, RunLogStore, ServiceState, ServiceStore, Store,
    StoreError,
};

/// A store retention can run on.
pub trait RetentionTestStore:
    Store + QueueStore + CallbackStore + ParcelStore + RunLogStore + RetentionStore + ServiceStore
{
}
impl<
    T: Store + QueueStore + CallbackStore + ParcelStore + RunLogStore + RetentionStore + ServiceStore,
> RetentionTestStore for T
{
}

/// Run `n` of parcel "keep", ended at `end` with exit `code` (0: succeeded).
async fn finished<S: Store>(store: &S, n: u128, end: Ts, code: i32) -> Run {
    let run = create(store, new_run(id(n), "keep", n as i64)).await;
    let running = start(store, &run, end - 5).await;
    step(store, &running, Transition::Exited { code, at: end }).await
}

fn artifact(name: &str, sha: char) -> Artifact {
    Artifact {
        name: name.into(),
        sha256: sha.to_string().repeat(64),
        size: 3,
    }
}

fn letter(n: u128) -> DeadLetter {
    DeadLetter {
        run_id: id(n),
        at: 40,
        reason: "exited with code 1".into(),
        attempts: 1,
        checkpoint: None,
        errors: json!([]),
        replayed_by: None,
    }
}

async fn ids_left<S: Store>(store: &S) -> Vec<u128> {
    let mut left: Vec<u128> = store
        .list_runs(&RunFilter::default())
        .await
        .expect("list")
        .iter()
        .map(|r| u128::from_str_radix(r.id.as_str(), 16).expect("test ids are numbers"))
        .collect();
    left.sort_unstable();
    left
}

pub async fn retention_deletes_old_finished_runs_of_a_status_in_batches_and_keeps_the_rest<
    S: RetentionTestStore,
>(
    store: S,
) {
    // 1, 2: old successes; 1 alone has brief `1…` and artifact `a…`, 2 shares `c…` with 5.
    let mut one = new_run(id(1), "keep", 1);
    one.brief_sha256 = "1".repeat(64);
    store
        .put_brief(&one.brief_sha256, b"{}")
        .await
        .expect("brief");
    let one = create(&store, one).await;
    let one = start(&store, &one, 25).await;
    store
        .add_artifacts(&one.id, &[artifact("report.md", 'a')])
        .await
        .expect("artifact");
    store
        .append_events(
            &one.id,
            &[NewEvent::new(EventKind::Log, 1, 27, json!({"line": "hi"}))],
        )
        .await
        .expect("event");
    step(&store, &one, Transition::Exited { code: 0, at: 30 }).await;
    let two = finished(&store, 2, 31, 0).await;
    store
        .add_artifacts(&two.id, &[artifact("shared.bin", 'c')])
        .await
        .expect("artifact");
    // 3: an old failure (another status); 4: a recent success.
    finished(&store, 3, 32, 1).await;
    finished(&store, 4, 500, 0).await;
    // 5: still running, with the shared artifact.
    let five = start(&store, &create(&store, new_run(id(5), "keep", 5)).await, 20).await;
    store
        .add_artifacts(&five.id, &[artifact("shared.bin", 'c')])
        .await
        .expect("artifact");
    // 6: an old success with an approval nobody decided.
    finished(&store, 6, 33, 0).await;
    store
        .request_approval(&Approval {
            run_id: id(6),
            id: "send".into(),
            attempt: 1,
            summary: "may I send?".into(),
            requested_at: 32,
            deadline: None,
            decision: None,
            decided_by: None,
            rationale: None,
            decided_at: None,
            details: None,
            input: None,
        })
        .await
        .expect("approval");
    // 7: an old failure dead-lettered; 8: one whose dead letter was replayed.
    finished(&store, 7, 34, 1).await;
    store
        .add_dead_letter(&letter(7))
        .await
        .expect("dead letter");
    finished(&store, 8, 35, 1).await;
    store
        .add_dead_letter(&letter(8))
        .await
        .expect("dead letter");
    store.mark_replayed(&id(8), &id(4)).await.expect("replayed");
    // 9: an old success whose completion callback is not delivered yet.
    let options = QueueOptions {
        callback_url: Some("http://127.0.0.1:9/done".into()),
        ..QueueOptions::default()
    };
    let nine = store
        .enqueue(&new_run(id(9), "keep", 9), &options)
        .await
        .expect("enqueue");
    let nine = start(&store, &nine, 31).await;
    step(&store, &nine, Transition::Exited { code: 0, at: 36 }).await;

    let first = store
        .expire_runs(Status::Succeeded, 100, None, 1)
        .await
        .expect("a batch of one");
    assert_eq!(first.runs, [id(1)], "the oldest first, one per batch");
    assert_eq!(first.artifacts, ["a".repeat(64)], "an artifact only it had");
    assert_eq!(first.briefs, ["1".repeat(64)], "a brief only it had");
    assert_eq!(store.get_brief(&"1".repeat(64)).await.expect("brief"), None);
    assert!(matches!(
        store.list_events(&id(1), 0, 10).await,
        Err(StoreError::NotFound(_))
    ));
    let second = store
        .expire_runs(Status::Succeeded, 100, first.cursor.as_ref(), 10)
        .await
        .expect("the rest");
    assert_eq!(second.runs, [id(2)], "runs 6 and 9 are kept, 4 is recent");
    assert!(second.artifacts.is_empty(), "run 5 still records `c…`");
    assert!(second.briefs.is_empty(), "other runs have brief `b…`");
    let none = store
        .expire_runs(Status::Succeeded, 100, second.cursor.as_ref(), 10)
        .await
        .expect("nothing left");
    assert_eq!(none, crate::Expired::default());

    let failed = store
        .expire_runs(Status::Failed, 100, None, 10)
        .await
        .expect("failures");
    assert_eq!(failed.runs, [id(3), id(8)], "7 keeps its dead letter");
    let live = store
        .expire_runs(Status::Running, i64::MAX, None, 10)
        .await
        .expect("a live status");
    assert!(live.runs.is_empty(), "retention never deletes a live run");
    assert_eq!(ids_left(&store).await, [4, 5, 6, 7, 9]);
    assert_eq!(store.list_dead_letters().await.expect("letters").len(), 1);

    // Once its callback is delivered, run 9 goes too.
    store.finish_callback(&id(9), 40).await.expect("delivered");
    let later = store
        .expire_runs(Status::Succeeded, 100, None, 10)
        .await
        .expect("again");
    assert_eq!(later.runs, [id(9)]);
}

pub async fn retention_of_events_empties_old_finished_runs_logs_and_keeps_the_runs<
    S: RetentionTestStore,
>(
    store: S,
) {
    let old = finished(&store, 1, 30, 0).await;
    let kept = finished(&store, 2, 31, 1).await;
    store
        .add_dead_letter(&letter(2))
        .await
        .expect("dead letter");
    let recent = finished(&store, 3, 500, 0).await;
    let live = start(&store, &create(&store, new_run(id(4), "keep", 4)).await, 10).await;

    let (n, cursor) = store.expire_events(100, None, 10).await.expect("events");
    assert_eq!(n, 1, "only run 1's events go");
    assert!(all_events(&store, &old.id).await.is_empty());
    let run = store.get_run(&old.id).await.expect("the run stays");
    assert_eq!(run.status(), Status::Succeeded);
    assert_eq!(
        store.list_attempts(&old.id).await.expect("attempts").len(),
        1
    );
    for other in [&kept, &recent, &live] {
        assert!(
            !all_events(&store, &other.id).await.is_empty(),
            "{} keeps its events",
            other.id
        );
    }
    let (n, _) = store
        .expire_events(100, cursor.as_ref(), 10)
        .await
        .expect("again");
    assert_eq!(n, 0);
    let (n, _) = store
        .expire_events(100, None, 10)
        .await
        .expect("from the start");
    assert_eq!(n, 0, "a run whose events are gone is not counted again");
}

pub async fn retention_names_the_log_archives_no_remaining_run_has<S: RetentionTestStore>(
    store: S,
) {
    let archive = |c: char| LogArchive {
        sha256: c.to_string().repeat(64),
        size: 4,
    };
    // 1 alone has archive `d…`; 2 and 3 share `e…` (same bytes); 3 is newer.
    for (n, end, c) in [(1, 30, 'd'), (2, 31, 'e'), (3, 500, 'e')] {
        let run = finished(&store, n, end, 0).await;
        store
            .append_log(&run.id, run.fence, 0, b"log\n")
            .await
            .expect("append");
        assert!(
            store
                .archive_log(&run.id, &archive(c))
                .await
                .expect("archive")
        );
    }
    let expired = store
        .expire_runs(Status::Succeeded, 100, None, 10)
        .await
        .expect("expire");
    assert_eq!(expired.runs, [id(1), id(2)]);
    assert_eq!(expired.logs, ["d".repeat(64)], "run 3 still has `e…`");
    assert_eq!(store.log_archive(&id(1)).await.expect("archive"), None);
    assert_eq!(
        store.log_archive(&id(3)).await.expect("archive"),
        Some(archive('e'))
    );
    let expired = store
        .expire_runs(Status::Succeeded, 1000, None, 10)
        .await
        .expect("expire");
    assert_eq!(expired.logs, ["e".repeat(64)]);
}

pub async fn retention_deletes_a_stopped_services_state_with_the_service<S: RetentionTestStore>(
    store: S,
) {
    // A cluster service (named, with schedules and listeners), stopped long ago.
    let mut new = new_run(id(1), "monitor", 10);
    new.operation = Operation::Service;
    let service = start(&store, &create(&store, new).await, 20).await;
    let state = ServiceState {
        run_id: service.id.clone(),
        config: json!({"overlap": "queue", "interval_ms": 60_000}),
        schedules: json!([{"expr": "0 * * * * *", "next_fire_at": 60_000}]),
        listeners: json!([{"addr": "127.0.0.1:0", "bound_addr": "127.0.0.1:4242"}]),
        updated_at: 21,
        name: Some("monitor".into()),
    };
    store
        .put_service_state(&state)
        .await
        .expect("service state");
    let stopped = step(
        &store,
        &service,
        Transition::Cancel {
            reason: "stopped by user".into(),
            exit_code: None,
            at: 30,
        },
    )
    .await;
    assert!(stopped.status().is_terminal());
    // A local service's state (no name) goes the same way.
    let mut local = new_run(id(2), "local", 11);
    local.operation = Operation::Service;
    let local = start(&store, &create(&store, local).await, 20).await;
    let mut local_state = state.clone();
    local_state.run_id = local.id.clone();
    local_state.name = None;
    store.put_service_state(&local_state).await.expect("state");
    step(
        &store,
        &local,
        Transition::Cancel {
            reason: "stopped by user".into(),
            exit_code: None,
            at: 31,
        },
    )
    .await;

    let expired = store
        .expire_runs(stopped.status(), 100, None, 10)
        .await
        .expect("retention deletes a stopped service and its state");
    assert_eq!(expired.runs, [id(1), id(2)]);
    for n in [1, 2] {
        assert_eq!(store.get_service_state(&id(n)).await.expect("get"), None);
    }
    assert!(ids_left(&store).await.is_empty());
    // The name is free, and a new run with the same id inherits nothing.
    assert_eq!(store.service_named("monitor").await.expect("lookup"), None);
    let again = create(&store, new_run(id(1), "monitor", 200)).await;
    assert_eq!(store.get_service_state(&again.id).await.expect("get"), None);
}
