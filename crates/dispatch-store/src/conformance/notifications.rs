//! The notification outbox: what enqueues a notification (in the same
//! transaction), and how deliverers claim, retry and settle them.

use dispatch_core::{EventKind, NewEvent, Transition};
use serde_json::json;

use super::{id, new_run, start, step};
use crate::notifications::{NewNotification, Settle};
use crate::{Approval, NotificationStore, RunExtras, Store, StoreError};

fn kinds(list: &[crate::Notification]) -> Vec<(String, String)> {
    let mut out: Vec<_> = list
        .iter()
        .map(|n| (n.kind.clone(), n.key.clone()))
        .collect();
    out.sort();
    out
}

pub async fn approvals_failures_and_budget_marks_enqueue_notifications_once<
    S: Store + NotificationStore,
>(
    store: S,
) {
    let limits = RunExtras {
        policy: Some(json!({"limits": {"max_tokens": 1000}})),
        ..RunExtras::default()
    };
    let run = store
        .create_run_with(&new_run(id(1), "p", 10), &limits, false)
        .await
        .expect("create")
        .run()
        .clone();
    let run = start(&store, &run, 20).await;
    let approval = Approval {
        run_id: run.id.clone(),
        id: "send".into(),
        attempt: 1,
        summary: "Send it?".into(),
        requested_at: 30,
        deadline: None,
        decision: None,
        decided_by: None,
        rationale: None,
        decided_at: None,
        details: None,
        input: None,
    };
    store.request_approval(&approval).await.expect("asked");
    store
        .request_approval(&approval)
        .await
        .expect("asked again");
    let usage = |tokens: u64, at| {
        NewEvent::new(
            EventKind::Usage,
            1,
            at,
            json!({"type": "usage", "input_tokens": tokens, "output_tokens": 0}),
        )
    };
    store
        .append_events(&run.id, &[usage(400, 40)])
        .await
        .expect("usage");
    store
        .append_events(&run.id, &[usage(450, 41)])
        .await
        .expect("usage past 80 %");
    store
        .append_events(&run.id, &[usage(10, 42)])
        .await
        .expect("usage under the next mark");
    let run = store.get_run(&run.id).await.expect("run");
    step(&store, &run, Transition::Exited { code: 3, at: 50 }).await;

    // A run that succeeds is no news.
    let ok = super::create(&store, new_run(id(2), "p", 11)).await;
    let ok = start(&store, &ok, 20).await;
    step(&store, &ok, Transition::Exited { code: 0, at: 50 }).await;

    let listed = store.list_notifications(100).await.expect("list");
    let r = run.id.to_string();
    assert_eq!(
        kinds(&listed),
        vec![
            ("approval.requested".into(), format!("approval:{r}:send")),
            ("budget.threshold".into(), format!("budget:{r}:tokens:50")),
            ("budget.threshold".into(), format!("budget:{r}:tokens:80")),
            ("run.failed".into(), format!("failed:{r}")),
        ],
        "{listed:#?}"
    );
    assert!(
        listed.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let failed = listed
        .iter()
        .find(|n| n.kind == "run.failed")
        .expect("failed");
    assert_eq!(failed.data["status"], "failed");
    assert_eq!(failed.data["exit_code"], 3);
    let eighty = listed
        .iter()
        .find(|n| n.key.ends_with(":80"))
        .expect("80 %");
    assert_eq!(eighty.data["used"], 850);
    assert_eq!(eighty.data["max"], 1000);
    assert!(listed.iter().all(|n| n.done_at.is_none() && n.tries == 0));
}

pub async fn notifications_are_claimed_held_retried_and_settled<S: Store + NotificationStore>(
    store: S,
) {
    let run = super::create(&store, new_run(id(1), "p", 10)).await;
    let n = |key: &str, at| NewNotification {
        key: key.into(),
        run_id: run.id.clone(),
        kind: "approval.escalated".into(),
        data: json!({"step": 1}),
        at,
    };
    assert!(
        store
            .enqueue_notification(&n("a", 100))
            .await
            .expect("enqueue")
    );
    assert!(
        !store
            .enqueue_notification(&n("a", 100))
            .await
            .expect("again"),
        "a key is enqueued once"
    );
    assert!(
        store
            .enqueue_notification(&n("b", 200))
            .await
            .expect("enqueue")
    );
    let err = store
        .enqueue_notification(&NewNotification {
            run_id: id(99),
            ..n("c", 1)
        })
        .await
        .expect_err("an unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    let due = store
        .claim_notifications(150, 1000, 10)
        .await
        .expect("claim");
    assert_eq!(
        due.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert!(
        store
            .claim_notifications(300, 1000, 10)
            .await
            .expect("claim")
            .iter()
            .all(|d| d.key == "b"),
        "a held notification is nobody else's"
    );
    let a = &due[0];
    store
        .settle_notification(
            a.seq,
            &Settle {
                sent: vec!["hook".into()],
                tries: 1,
                error: Some("slack: 503".into()),
                outcome: None,
                next_at: 400,
                at: 160,
            },
        )
        .await
        .expect("settle");
    let counts = store.notification_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.retrying), (2, 1), "{counts:?}");
    let again = store
        .claim_notifications(400, 1000, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].sent, vec!["hook".to_string()]);
    assert_eq!(again[0].tries, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("slack: 503"));
    store
        .settle_notification(
            a.seq,
            &Settle {
                sent: vec!["hook".into(), "slack".into()],
                tries: 2,
                error: None,
                outcome: Some("delivered".into()),
                next_at: 400,
                at: 410,
            },
        )
        .await
        .expect("settle");
    assert!(
        store
            .claim_notifications(5000, 1000, 10)
            .await
            .expect("claim")
            .iter()
            .all(|d| d.key == "b"),
        "a settled notification is never due again"
    );
    let counts = store.notification_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.delivered), (1, 1), "{counts:?}");
    let listed = store.list_notifications(10).await.expect("list");
    let settled = listed.iter().find(|l| l.key == "a").expect("a");
    assert_eq!(settled.outcome.as_deref(), Some("delivered"));
    assert_eq!(settled.done_at, Some(410));
}

/// A review given a timeout has that deadline on its approval; denied by
/// the deadline, the run's end and a `review.expired` notification are
/// saved together. A person's denial notifies nobody.
pub async fn a_review_denied_by_its_deadline_notifies_in_the_same_transaction<
    S: Store + NotificationStore,
>(
    store: S,
) {
    use crate::{Decision, REVIEW_APPROVAL, REVIEW_DEADLINE_BY, Review, StateWrite};
    let in_review = RunExtras {
        review: Some(Review {
            reason: "deploys need a person".into(),
            timeout_ms: Some(1_000),
        }),
        ..RunExtras::default()
    };
    let mut runs = Vec::new();
    for n in [1, 2] {
        let created = store
            .create_run_with(&new_run(id(n), "deploy", 10), &in_review, false)
            .await
            .expect("create");
        runs.push(created.run().clone());
    }
    let pending = store.list_approvals(None, true).await.expect("list");
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|a| a.id == REVIEW_APPROVAL && a.deadline == Some(1_010)),
        "the deadline is the timeout after creation: {pending:?}"
    );
    let deny = |by: &str| Decision {
        decision: "deny".into(),
        by: by.into(),
        rationale: Some("too late".into()),
        at: 1_020,
        input: None,
    };
    for (run, by) in runs.iter().zip([REVIEW_DEADLINE_BY, "bob"]) {
        let cancel = Transition::Cancel {
            reason: format!("cancelled before it started: {by}"),
            exit_code: None,
            at: 1_020,
        };
        let state = run
            .state
            .apply(run.operation, &cancel)
            .expect("review to cancelled");
        let event = NewEvent::new(
            EventKind::State,
            run.attempt,
            1_020,
            json!({"from": "review", "to": "cancelled"}),
        );
        let (_, moved) = store
            .decide_approval_moving(
                &run.id,
                REVIEW_APPROVAL,
                &deny(by),
                run.version,
                &StateWrite::new(state, event),
            )
            .await
            .expect("decided and moved");
        assert!(moved.state.is_terminal());
    }
    let mut outbox = store.list_notifications(10).await.expect("outbox");
    // (Each review asked the approvers too, as any approval does.)
    outbox.retain(|n| n.kind != crate::notifications::APPROVAL_REQUESTED);
    assert_eq!(
        kinds(&outbox),
        vec![(
            "review.expired".to_string(),
            format!("review-expired:{}", runs[0].id)
        )],
        "only the deadline's denial notifies: {outbox:?}"
    );
    let note = &outbox[0];
    assert_eq!(note.run_id, runs[0].id);
    assert_eq!(
        note.data["reason"],
        format!("cancelled before it started: {REVIEW_DEADLINE_BY}")
    );
    assert_eq!(note.data["approval"]["deadline"], 1_010);
}
