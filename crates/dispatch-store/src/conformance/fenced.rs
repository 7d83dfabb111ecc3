//! What fencing promises beyond state writes and events: a run's log, its
//! artifacts and its output take only its current holder's token, and the
//! token moves on with every claim, local or not (it is the agent's
//! `DISPATCH_FENCE`).

use dispatch_core::EventKind;
use dispatch_core::quota::{OnHard, Quota, QuotaLimit};
use dispatch_core::{NewEvent, Status, Transition};
use serde_json::json;

use super::queue::{agent_up, claim_all};
use super::{HELPER, create, id, new_run, step, write_for};
use crate::{
    Artifact, Claimed, FencedArtifactStore, NewRun, NotificationStore, QueueStore, QuotaStore,
    RunExtras, RunLogStore, Store, StoreError,
};

/// Run 1, claimed by `slow` at 100, swept at 1101 (its lease ran out) and
/// claimed again by `fast` at 1200: the old holder and the new one.
async fn taken_over<S: Store + QueueStore>(store: &S) -> (Claimed, Claimed) {
    create(store, new_run(id(1), "p", 10)).await;
    let old = claim_all(store, "slow", 1, 100).await.remove(0);
    assert_eq!(store.sweep_expired(1101).await.expect("sweep"), vec![id(1)]);
    let new = claim_all(store, "fast", 1, 1200).await.remove(0);
    assert!(new.fence > old.fence, "every claim moves the token on");
    (old, new)
}

fn is_fenced(err: &StoreError, fence: i64) -> bool {
    matches!(err, StoreError::Fenced { id: got, fence: f } if *got == id(1) && *f == fence)
}

pub async fn a_stale_token_appends_nothing_to_the_log<S: Store + QueueStore + RunLogStore>(
    store: S,
) {
    create(&store, new_run(id(1), "p", 10)).await;
    let old = claim_all(&store, "slow", 1, 100).await.remove(0);
    assert_eq!(
        old.run.fence, old.fence,
        "the claimed run carries its token"
    );
    store
        .append_log(&id(1), old.fence, 0, b"attempt 1: hello\n")
        .await
        .expect("the holder appends");
    // Its lease runs out: the run goes back to the queue under a new token.
    assert_eq!(store.sweep_expired(1101).await.expect("sweep"), vec![id(1)]);
    let err = store
        .append_log(&id(1), old.fence, 17, b"attempt 1: late\n")
        .await
        .expect_err("a swept holder appends nothing");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    let new = claim_all(&store, "fast", 1, 1200).await.remove(0);
    store
        .append_log(&id(1), new.fence, 17, b"attempt 2: done\n")
        .await
        .expect("the new holder appends");
    // The old holder comes back, even knowing where the log ends now: the
    // token stops it (the measured bug: its output after attempt 2's end).
    for offset in [17, 33] {
        let err = store
            .append_log(&id(1), old.fence, offset, b"attempt 1: succeeded\n")
            .await
            .expect_err("a stale token appends nothing");
        assert!(is_fenced(&err, old.fence), "got {err:?}");
    }
    assert_eq!(
        store.read_log(&id(1), 0, 1000).await.expect("read"),
        b"attempt 1: hello\nattempt 2: done\n",
        "refused appends wrote nothing"
    );
    // The holder's last bytes ship after its run ended, as long as nobody
    // claimed it since.
    let running = agent_up(&store, &new, 1300).await;
    let end = write_for(&running, &Transition::Exited { code: 0, at: 1400 });
    store
        .fenced_transition(&id(1), new.fence, running.version, &end)
        .await
        .expect("the holder ends the run");
    store
        .append_log(&id(1), new.fence, 33, b"run succeeded\n")
        .await
        .expect("the last holder's last line");
    let err = store
        .append_log(&id(1), old.fence, 47, b"run succeeded\n")
        .await
        .expect_err("still refused after the end");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    assert_eq!(
        store.read_log(&id(1), 0, 1000).await.expect("read"),
        b"attempt 1: hello\nattempt 2: done\nrun succeeded\n",
        "one final line, the last holder's"
    );
}

pub async fn a_stale_token_records_no_artifact<S: Store + QueueStore + FencedArtifactStore>(
    store: S,
) {
    let (old, new) = taken_over(&store).await;
    let artifact = |name: &str, c: char| Artifact {
        name: name.into(),
        sha256: c.to_string().repeat(64),
        size: 3,
    };
    let err = store
        .fenced_add_artifacts(&id(1), old.fence, &[artifact("report.md", 'a')])
        .await
        .expect_err("a stale token records nothing");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    assert!(
        store.list_artifacts(&id(1)).await.expect("list").is_empty(),
        "nothing recorded"
    );
    store
        .fenced_add_artifacts(&id(1), new.fence, &[artifact("report.md", 'b')])
        .await
        .expect("the holder records its artifacts");
    // The old holder's version of the same name does not replace it.
    let err = store
        .fenced_add_artifacts(&id(1), old.fence, &[artifact("report.md", 'a')])
        .await
        .expect_err("a stale token records nothing");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    assert_eq!(
        store.list_artifacts(&id(1)).await.expect("list"),
        vec![artifact("report.md", 'b')]
    );
    let err = store
        .fenced_add_artifacts(&id(77), new.fence, &[artifact("x", 'c')])
        .await
        .expect_err("an unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
}

pub async fn a_stale_token_stores_no_output<S: Store + QueueStore>(store: S) {
    create(&store, new_run(id(1), "p", 10)).await;
    let old = claim_all(&store, "slow", 1, 100).await.remove(0);
    let running = agent_up(&store, &old, 200).await;
    assert_eq!(store.sweep_expired(1201).await.expect("sweep"), vec![id(1)]);
    let new = claim_all(&store, "fast", 1, 1300).await.remove(0);
    // The old holder's agent finished during the partition: its result,
    // output and all, arrives after the takeover.
    let mut stale = write_for(&running, &Transition::Exited { code: 0, at: 1400 });
    stale.output = Some(json!({"from": "attempt 1"}));
    let err = store
        .fenced_transition(&id(1), old.fence, new.run.version, &stale)
        .await
        .expect_err("a stale token stores no output");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    assert_eq!(store.get_run(&id(1)).await.expect("get").output, None);
    let up = agent_up(&store, &new, 1500).await;
    let mut end = write_for(&up, &Transition::Exited { code: 0, at: 1600 });
    end.output = Some(json!({"from": "attempt 2"}));
    let done = store
        .fenced_transition(&id(1), new.fence, up.version, &end)
        .await
        .expect("the holder stores its output");
    assert_eq!(done.output, Some(json!({"from": "attempt 2"})));
    let err = store
        .fenced_transition(&id(1), old.fence, done.version, &stale)
        .await
        .expect_err("still refused after the end");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    assert_eq!(
        store.get_run(&id(1)).await.expect("get").output,
        Some(json!({"from": "attempt 2"})),
        "the last holder's output stays"
    );
}

pub async fn every_local_claim_moves_the_token_on<S: Store>(store: S) {
    let queued = create(&store, new_run(id(1), "p", 10)).await;
    assert_eq!(queued.fence, 0, "nobody held it yet");
    let claim = |at| Transition::Claim { helper: HELPER, at };
    let first = step(&store, &queued, claim(20)).await;
    assert!(first.fence > queued.fence, "a helper's claim: {first:?}");
    assert_eq!(store.get_run(&id(1)).await.expect("get").fence, first.fence);
    let up = step(
        &store,
        &first,
        Transition::AgentStarted {
            agent: super::AGENT,
            at: 21,
        },
    )
    .await;
    assert_eq!(up.fence, first.fence, "the holder's own writes keep it");
    let retry = step(
        &store,
        &up,
        Transition::Requeue {
            not_before: None,
            at: 30,
        },
    )
    .await;
    assert_eq!(retry.status(), Status::Queued);
    let second = step(&store, &retry, claim(40)).await;
    assert_eq!(second.attempt, 2);
    assert!(second.fence > first.fence, "attempt 2 has a higher token");

    // `dispatch run`'s run, created held by its helper, has one already.
    let held = store
        .create_run(&NewRun {
            claimed_by: Some(HELPER),
            ..new_run(id(2), "p", 50)
        })
        .await
        .expect("create claimed");
    assert_eq!(held.status(), Status::Starting);
    assert!(held.fence > 0, "{held:?}");
}

pub async fn a_stale_token_asks_for_no_approval<S: Store + QueueStore + FencedArtifactStore>(
    store: S,
) {
    let (old, new) = taken_over(&store).await;
    let ask = super::reliability::approval(1, "refund", 1300);
    let err = store
        .fenced_request_approval(old.fence, &ask)
        .await
        .expect_err("a stale token asks for nothing");
    assert!(is_fenced(&err, old.fence), "got {err:?}");
    assert!(
        store
            .list_approvals(Some(&id(1)), true)
            .await
            .expect("list")
            .is_empty(),
        "no pending approval left behind"
    );
    let events = store.list_events(&id(1), 0, 100).await.expect("events");
    assert!(
        !events
            .iter()
            .any(|e| e.event.is(EventKind::ApprovalRequested)),
        "no approval_requested event: {events:?}"
    );
    let asked = store
        .fenced_request_approval(new.fence, &ask)
        .await
        .expect("the holder asks");
    assert_eq!(asked.id, "refund");
    assert_eq!(
        store
            .list_approvals(Some(&id(1)), true)
            .await
            .expect("list")
            .len(),
        1
    );
    let err = store
        .fenced_request_approval(new.fence, &super::reliability::approval(77, "x", 1400))
        .await
        .expect_err("an unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
}

/// The holder's appends racing one another all land, once each; a log chunk
/// sent twice at once is stored once; once the run is over its holder's
/// token appends nothing, and a run that does not exist is named.
pub async fn a_holders_racing_appends_land_once_each_until_its_run_ends<
    S: Store + QueueStore + RunLogStore,
>(
    store: S,
) {
    create(&store, new_run(id(1), "p", 10)).await;
    let claimed = claim_all(&store, "w1", 1, 100).await.remove(0);
    let running = agent_up(&store, &claimed, 150).await;
    let before = super::all_events(&store, &id(1)).await.len();
    let appends = (0..16).map(|i| {
        let note = NewEvent::new(EventKind::Step, 1, 200 + i, json!({ "i": i }));
        let store = &store;
        async move {
            store
                .fenced_append_events(&id(1), claimed.fence, &[note])
                .await
        }
    });
    for result in futures_util::future::join_all(appends).await {
        result.expect("the holder appends");
    }
    let events = super::all_events(&store, &id(1)).await;
    let mut seen: Vec<i64> = events[before..]
        .iter()
        .filter_map(|e| e.event.data["i"].as_i64())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..16).collect::<Vec<_>>(), "each append once");

    let chunk = b"hello\n";
    let run = id(1);
    let (a, b) = tokio::join!(
        store.append_log(&run, claimed.fence, 0, chunk),
        store.append_log(&run, claimed.fence, 0, chunk),
    );
    a.expect("the first of two racing sends");
    b.expect("the second: a retry finding its chunk there");
    store
        .append_log(&id(1), claimed.fence, 6, b"")
        .await
        .expect("nothing to add where the log ends");
    assert_eq!(store.log_length(&id(1)).await.expect("length"), 6);

    store
        .fenced_transition(
            &id(1),
            claimed.fence,
            running.version,
            &write_for(&running, &Transition::Exited { code: 0, at: 300 }),
        )
        .await
        .expect("the holder finishes its run");
    let late = NewEvent::new(EventKind::Step, 1, 400, json!({ "late": true }));
    let err = store
        .fenced_append_events(&id(1), claimed.fence, std::slice::from_ref(&late))
        .await
        .expect_err("a finished run's holder appends nothing");
    assert!(is_fenced(&err, claimed.fence), "got {err:?}");
    assert!(
        !super::all_events(&store, &id(1))
            .await
            .iter()
            .any(|e| e.event.data["late"] == json!(true)),
        "nothing was stored"
    );
    let err = store
        .fenced_append_events(&id(9), claimed.fence, &[late])
        .await
        .expect_err("no such run");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
}

/// 2026-11-20T10:00:00Z: the usage's period is the day holding `at`.
pub(super) const T: i64 = 1_795_168_800_000;

/// Three queued runs whose usage counts differently: run 1's only in its
/// totals; run 2's policy has a budget; run 3's project `b` has a daily one.
pub(super) async fn budgeted_runs<S: Store + QuotaStore>(store: &S) {
    let daily = Quota {
        project: "b".to_string(),
        limit: QuotaLimit::TokensPerDay,
        value: 1e9,
        soft_pct: 80,
        on_hard: OnHard::Wait,
        updated_at: T,
    };
    store.set_quotas(&[daily]).await.expect("a daily budget");
    create(store, new_run(id(1), "p", T)).await;
    let budget = RunExtras {
        policy: Some(json!({"limits": {"max_tokens": 1000}})),
        ..RunExtras::default()
    };
    store
        .create_run_with(&new_run(id(2), "p", T + 1), &budget, false)
        .await
        .expect("create");
    let mut third = new_run(id(3), "p", T + 2);
    third.project = "b".to_string();
    create(store, third).await;
}

/// The budget mark of [`budgeted_runs`]' run 2, and project `b`'s use at `at`.
pub(super) async fn budget_marked_and_quota_used<S: QuotaStore + NotificationStore>(
    store: &S,
    at: i64,
) -> Vec<crate::QuotaUse> {
    let marks: Vec<_> = store
        .list_notifications(100)
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.key)
        .collect();
    assert_eq!(marks, vec![format!("budget:{}:tokens:50", id(2))]);
    store.quota_use(&["b".to_string()], at).await.expect("use")
}

/// A holder's usage counts toward its run's totals, its policy's budget
/// marks and its project's budgets, however the store writes it; a token
/// no longer current adds nothing anywhere.
pub async fn a_holders_usage_counts_toward_totals_marks_and_budgets<
    S: Store + QueueStore + QuotaStore + NotificationStore,
>(
    store: S,
) {
    budgeted_runs(&store).await;
    let claimed = claim_all(&store, "w", 3, T + 10).await;
    assert_eq!(claimed.len(), 3, "all three are claimed");
    let usage = |tokens: u64, at: i64| {
        NewEvent::new(
            EventKind::Usage,
            1,
            at,
            json!({"input_tokens": tokens, "output_tokens": 1, "cost_usd": 0.5}),
        )
    };
    for c in &claimed {
        agent_up(&store, c, T + 20).await;
        let step = NewEvent::new(EventKind::Step, 1, T + 21, json!({ "before": "usage" }));
        store
            .fenced_append_events(&c.run.id, c.fence, &[step, usage(599, T + 22)])
            .await
            .expect("the holder's usage");
    }
    for n in 1..=3 {
        let run = store.get_run(&id(n)).await.expect("run");
        assert_eq!(run.usage.input_tokens, 599, "run {n}");
        assert_eq!(run.usage.output_tokens, 1, "run {n}");
        assert_eq!(run.usage.cost_usd, 0.5, "run {n}");
        let events = super::all_events(&store, &id(n)).await;
        let last: Vec<_> = events.iter().rev().take(2).collect();
        assert!(
            last[0].event.is(EventKind::Usage) && last[1].event.is(EventKind::Step),
            "run {n}: both events, in order: {last:?}"
        );
    }
    let used = budget_marked_and_quota_used(&store, T + 30).await;
    assert_eq!(used.len(), 1);
    assert_eq!(
        used[0].used, 600.0,
        "run 3's usage counts in its project's day"
    );

    // Run 1 ends; its holder's token adds nothing more.
    let running = store.get_run(&id(1)).await.expect("run");
    let one = &claimed.iter().find(|c| c.run.id == id(1)).expect("run 1");
    store
        .fenced_transition(
            &id(1),
            one.fence,
            running.version,
            &write_for(
                &running,
                &Transition::Exited {
                    code: 0,
                    at: T + 40,
                },
            ),
        )
        .await
        .expect("the holder finishes its run");
    let err = store
        .fenced_append_events(&id(1), one.fence, &[usage(5, T + 41)])
        .await
        .expect_err("a finished run's holder adds no usage");
    assert!(is_fenced(&err, one.fence), "got {err:?}");
    let run = store.get_run(&id(1)).await.expect("run");
    assert_eq!(run.usage.input_tokens, 599, "nothing added");
    assert!(
        !super::all_events(&store, &id(1))
            .await
            .iter()
            .any(|e| e.event.at == T + 41),
        "no event stored"
    );
}
