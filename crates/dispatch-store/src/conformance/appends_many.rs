//! Many held runs' event appends and log chunks at once (a worker's batch): each answered
//! and saved as it would be alone.

use dispatch_core::{EventKind, NewEvent, Transition};
use serde_json::json;

use super::fenced::{T, budget_marked_and_quota_used, budgeted_runs};
use super::queue::{agent_up, claim_all};
use super::{create, id, new_run, write_for};
use crate::{
    HeldEvents, HeldLog, NotificationStore, QueueStore, QuotaStore, RunLogStore, Store, StoreError,
};

/// One batch holding: two appends of run 1 (plain events, then usage that
/// only its totals count), run 2's usage that its policy's budget counts,
/// run 3's usage that its project's daily quota counts, run 4's events
/// under a token gone stale (its run finished), and an unknown run's.
pub async fn a_batch_of_held_runs_appends_answers_each_as_it_would_alone<
    S: Store + QueueStore + QuotaStore + NotificationStore,
>(
    store: S,
) {
    budgeted_runs(&store).await;
    create(&store, new_run(id(4), "p", T + 3)).await;
    let claimed = claim_all(&store, "w", 4, T + 10).await;
    assert_eq!(claimed.len(), 4, "all four are claimed");
    for c in &claimed {
        agent_up(&store, c, T + 20).await;
    }
    let fence = |n: u128| {
        claimed
            .iter()
            .find(|c| c.run.id == id(n))
            .expect("held")
            .fence
    };
    // Run 4 ends: its holder's token writes nothing more.
    let running = store.get_run(&id(4)).await.expect("run 4");
    let exited = Transition::Exited {
        code: 0,
        at: T + 25,
    };
    store
        .fenced_transition(
            &id(4),
            fence(4),
            running.version,
            &write_for(&running, &exited),
        )
        .await
        .expect("run 4 finishes");
    let step = |at: i64| NewEvent::new(EventKind::Step, 1, at, json!({ "at": at }));
    let usage = |tokens: u64, at: i64| {
        NewEvent::new(
            EventKind::Usage,
            1,
            at,
            json!({"input_tokens": tokens, "output_tokens": 1, "cost_usd": 0.5}),
        )
    };
    let held = |n: u128, events: Vec<NewEvent>| HeldEvents {
        id: id(n),
        fence: fence(n),
        events,
    };
    let unknown = HeldEvents {
        id: id(9),
        fence: 1,
        events: vec![step(T + 30)],
    };
    let batch = vec![
        held(1, vec![step(T + 30), step(T + 31)]),
        held(2, vec![step(T + 30), usage(599, T + 31)]),
        held(4, vec![step(T + 30)]),
        unknown,
        held(3, vec![step(T + 30), usage(599, T + 31)]),
        held(1, vec![usage(599, T + 32), usage(5, T + 33)]),
    ];
    let answers = store
        .fenced_append_events_many(&batch)
        .await
        .expect("the batch is decided");
    assert_eq!(answers.len(), batch.len(), "one answer per append");
    for i in [0, 1, 4, 5] {
        assert!(answers[i].is_ok(), "append {i}: {:?}", answers[i]);
    }
    assert!(
        matches!(&answers[2], Err(StoreError::Fenced { id: r, fence: f }) if *r == id(4) && *f == fence(4)),
        "a stale token is refused: {:?}",
        answers[2]
    );
    assert!(
        matches!(&answers[3], Err(StoreError::NotFound(_))),
        "an unknown run is not found: {:?}",
        answers[3]
    );

    // Run 1: both appends, each in its order, its usage summed.
    let run = store.get_run(&id(1)).await.expect("run 1");
    assert_eq!(
        (
            run.usage.input_tokens,
            run.usage.output_tokens,
            run.usage.cost_usd
        ),
        (604, 2, 1.0)
    );
    let ats: Vec<i64> = super::all_events(&store, &id(1))
        .await
        .iter()
        .map(|e| e.event.at)
        .filter(|at| *at >= T + 30)
        .collect();
    assert_eq!(ats, vec![T + 30, T + 31, T + 32, T + 33], "in order");
    // Runs 2 and 3: counted by their budget and their quota, as alone.
    for n in [2, 3] {
        let run = store.get_run(&id(n)).await.expect("run");
        assert_eq!(run.usage.input_tokens, 599, "run {n}");
        let last: Vec<_> = super::all_events(&store, &id(n))
            .await
            .into_iter()
            .rev()
            .take(2)
            .collect();
        assert!(
            last[0].event.is(EventKind::Usage) && last[1].event.is(EventKind::Step),
            "run {n}: both events, in order: {last:?}"
        );
    }
    let used = budget_marked_and_quota_used(&store, T + 40).await;
    assert_eq!(
        used[0].used, 600.0,
        "run 3's usage counts in its project's day"
    );
    // Run 4: nothing after its end.
    assert!(
        !super::all_events(&store, &id(4))
            .await
            .iter()
            .any(|e| e.event.at == T + 30),
        "a stale holder's events are not stored"
    );
}

/// One batch of log chunks: run 1's first chunk, run 2's where its log
/// does not end (a wrong guess), run 3's retry of a chunk that committed,
/// run 4's under a token gone stale (its run was taken over), an unknown
/// run's, and run 5's empty chunk where its log ends.
pub async fn a_batch_of_held_runs_log_chunks_answers_each_as_it_would_alone<
    S: Store + QueueStore + RunLogStore,
>(
    store: S,
) {
    for n in 1..=5 {
        create(&store, new_run(id(n), "p", 10 + n as i64)).await;
    }
    let claimed = claim_all(&store, "w", 5, 100).await;
    let fence = |n: u128| {
        claimed
            .iter()
            .find(|c| c.run.id == id(n))
            .expect("held")
            .fence
    };
    for n in [2, 3, 5] {
        store
            .append_log(&id(n), fence(n), 0, b"first\n")
            .await
            .expect("the holder appends");
    }
    // Run 4's lease runs out and another worker takes it.
    let stale = fence(4);
    assert_eq!(
        store.sweep_expired(1_000_000).await.expect("sweep").len(),
        5
    );
    let again = claim_all(&store, "w2", 5, 1_000_001).await;
    // The others' holder carries on under the new token.
    let fence = |n: u128| match n {
        4 => stale,
        _ => {
            again
                .iter()
                .find(|c| c.run.id == id(n))
                .expect("held")
                .fence
        }
    };
    let held = |n: u128, offset: u64, bytes: &[u8]| HeldLog {
        id: id(n),
        fence: fence(n),
        offset,
        bytes: bytes.to_vec(),
    };
    let batch = vec![
        held(1, 0, b"hello\n"),
        held(2, 3, b"wrong\n"),
        held(3, 0, b"first\n"),
        held(4, 0, b"late\n"),
        HeldLog {
            id: id(9),
            fence: 1,
            offset: 0,
            bytes: b"who\n".to_vec(),
        },
        held(5, 6, b""),
    ];
    let answers = store
        .append_logs_many(&batch)
        .await
        .expect("the batch is decided");
    assert_eq!(answers.len(), batch.len(), "one answer per chunk");
    for i in [0, 2, 5] {
        assert!(answers[i].is_ok(), "chunk {i}: {:?}", answers[i]);
    }
    assert!(
        matches!(&answers[1], Err(StoreError::LogMoved { length: 6, .. })),
        "a wrong guess learns the length: {:?}",
        answers[1]
    );
    assert!(
        matches!(&answers[3], Err(StoreError::Fenced { fence: f, .. }) if *f == stale),
        "a stale token appends nothing: {:?}",
        answers[3]
    );
    assert!(
        matches!(&answers[4], Err(StoreError::NotFound(_))),
        "an unknown run is not found: {:?}",
        answers[4]
    );
    let logs = [
        (1, &b"hello\n"[..]),
        (2, b"first\n"),
        (3, b"first\n"),
        (4, b""),
        (5, b"first\n"),
    ];
    for (n, want) in logs {
        let got = store.read_log(&id(n), 0, 1024).await.expect("read");
        assert_eq!(got, want, "run {n}'s log");
    }
}
