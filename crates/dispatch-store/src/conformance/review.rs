//! Runs created in review (a policy sent them to a person) and the decision
//! that queues or cancels them with it.

use dispatch_core::concurrency::{RunConcurrency, Strategy};
use dispatch_core::{EventKind, NewEvent, RunState, Status, Transition};
use serde_json::json;

use super::{HELPER, all_events, id, new_run, write_for};
use crate::{Created, Decision, REVIEW_APPROVAL, Run, RunExtras, Store, StoreError};

fn in_review(reason: &str) -> RunExtras {
    RunExtras {
        idempotency_key: Some("deploy-42".into()),
        session: Some("deploy/main".into()),
        concurrency: Some(RunConcurrency {
            key: "deploys".into(),
            max: 1,
            strategy: Strategy::Drop,
        }),
        events: vec![NewEvent::new(
            EventKind::Policy,
            0,
            5,
            json!({"decision": "review", "action": "create_run"}),
        )],
        review: Some(reason.into()),
        ..RunExtras::default()
    }
}

async fn create_in_review<S: Store>(store: &S, n: u128, extras: &RunExtras) -> Run {
    let mut new = new_run(id(n), "deploy", n as i64);
    // Asked for claimed (a local `dispatch run`): review wins, nobody holds it.
    new.claimed_by = Some(HELPER);
    match store.create_run_with(&new, extras, true).await {
        Ok(Created::New(run)) => run,
        other => panic!("a new run in review: {other:?}"),
    }
}

fn decision(decision: &str, by: &str, at: i64) -> Decision {
    Decision {
        decision: decision.into(),
        by: by.into(),
        rationale: Some(format!("{by} says {decision}")),
        at,
        input: None,
    }
}

pub async fn a_run_created_in_review_waits_unclaimed_with_its_approval_pending<S: Store>(store: S) {
    let run = create_in_review(&store, 1, &in_review("deploys need a person")).await;
    assert_eq!(
        run.state,
        RunState::Review {
            reason: "deploys need a person".into(),
            since: 1
        }
    );
    assert_eq!((run.attempt, run.state.helper()), (1, None));
    assert_eq!(store.get_run(&run.id).await.expect("get"), run);
    let pending = store.list_approvals(None, true).await.expect("list");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].id, REVIEW_APPROVAL);
    assert_eq!(pending[0].run_id, run.id);
    assert!(pending[0].summary.contains("deploys need a person"));
    assert_eq!(
        pending[0].details.as_ref().map(|d| &d["kind"]),
        Some(&json!("review"))
    );
    // Created, the policy's decision and the approval, in that order, at once.
    let kinds: Vec<String> = all_events(&store, &run.id)
        .await
        .iter()
        .map(|e| e.event.kind.to_string())
        .collect();
    assert_eq!(kinds, ["created", "policy", "approval_requested"]);
    // It holds its key and session like any live run, and takes no slot
    // of its concurrency key (`drop` would have cancelled a second run).
    let again = store
        .create_run_with(&new_run(id(2), "deploy", 2), &in_review("again"), true)
        .await
        .expect("create");
    assert_eq!(
        again,
        Created::Existing(run.clone()),
        "the same key answers it"
    );
    let other = RunExtras {
        session: Some("deploy/main".into()),
        ..RunExtras::default()
    };
    let err = store
        .create_run_with(&new_run(id(3), "deploy", 3), &other, true)
        .await
        .expect_err("the session is held");
    assert!(matches!(err, StoreError::SessionBusy { .. }), "{err:?}");
    let keyed = RunExtras {
        concurrency: in_review("x").concurrency,
        ..RunExtras::default()
    };
    let Ok(Created::New(second)) = store
        .create_run_with(&new_run(id(4), "deploy", 4), &keyed, true)
        .await
    else {
        panic!("a run of the same key is created")
    };
    assert_eq!(
        second.status(),
        Status::Queued,
        "not dropped: review holds no slot"
    );
    let listed = store
        .list_runs(&crate::RunFilter {
            statuses: vec![Status::Review],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [run.id]
    );
}

pub async fn deciding_a_review_queues_or_cancels_the_run_with_the_decision_at_once<S: Store>(
    store: S,
) {
    let run = create_in_review(&store, 1, &in_review("deploys need a person")).await;
    let approve = write_for(&run, &Transition::Approve { at: 20 });
    // A stale version: nothing is decided, nothing moves.
    let err = store
        .decide_approval_moving(
            &run.id,
            REVIEW_APPROVAL,
            &decision("approve", "ada", 20),
            run.version - 1,
            &approve,
        )
        .await
        .expect_err("a stale version conflicts");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(store.get_run(&run.id).await.expect("get"), run);
    assert_eq!(
        store
            .list_approvals(Some(&run.id), true)
            .await
            .expect("list")
            .len(),
        1
    );
    // Approved: queued for its first attempt, the decision recorded with it.
    let (decided, queued) = store
        .decide_approval_moving(
            &run.id,
            REVIEW_APPROVAL,
            &decision("approve", "ada", 20),
            run.version,
            &approve,
        )
        .await
        .expect("decided and queued");
    assert_eq!(decided.decision.as_deref(), Some("approve"));
    assert_eq!(decided.decided_by.as_deref(), Some("ada"));
    assert_eq!(
        queued.state,
        RunState::Queued {
            not_before: Some(20)
        }
    );
    assert_eq!((queued.attempt, queued.version), (1, run.version + 1));
    assert_eq!(store.get_run(&run.id).await.expect("get"), queued);
    assert!(
        store
            .list_attempts(&run.id)
            .await
            .expect("attempts")
            .is_empty()
    );
    // Decided once: a second decision changes nothing.
    let deny = write_for(&run, &cancel("denied"));
    let err = store
        .decide_approval_moving(
            &run.id,
            REVIEW_APPROVAL,
            &decision("deny", "bob", 30),
            queued.version,
            &deny,
        )
        .await
        .expect_err("decided already");
    assert!(matches!(err, StoreError::AlreadyDecided { .. }), "{err:?}");
    assert_eq!(store.get_run(&run.id).await.expect("get"), queued);
    // Denied: cancelled, never started, with the decision.
    let other = create_in_review(
        &store,
        2,
        &RunExtras {
            review: Some("why not".into()),
            ..RunExtras::default()
        },
    )
    .await;
    let deny = write_for(&other, &cancel("denied in review by bob"));
    let (decided, cancelled) = store
        .decide_approval_moving(
            &other.id,
            REVIEW_APPROVAL,
            &decision("deny", "bob", 30),
            other.version,
            &deny,
        )
        .await
        .expect("decided and cancelled");
    assert_eq!(decided.decision.as_deref(), Some("deny"));
    assert_eq!(cancelled.status(), Status::Cancelled);
    assert_eq!(cancelled.state.started_at(), None);
    let kinds: Vec<String> = all_events(&store, &other.id)
        .await
        .iter()
        .map(|e| e.event.kind.to_string())
        .collect();
    assert_eq!(
        kinds,
        ["created", "approval_requested", "approval_decided", "state"]
    );
    // Stopped while in review instead: the approval ends with the run.
    let third = create_in_review(
        &store,
        3,
        &RunExtras {
            review: Some("why not".into()),
            ..RunExtras::default()
        },
    )
    .await;
    store
        .transition(
            &third.id,
            third.version,
            &write_for(&third, &cancel("stopped")),
        )
        .await
        .expect("cancelled");
    let ended = store
        .list_approvals(Some(&third.id), false)
        .await
        .expect("list");
    assert_eq!(ended[0].decision.as_deref(), Some(crate::ENDED_DECISION));
}

fn cancel(reason: &str) -> Transition {
    Transition::Cancel {
        reason: reason.into(),
        exit_code: None,
        at: 30,
    }
}
