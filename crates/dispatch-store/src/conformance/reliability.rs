//! Deduplicated creation, sessions, run policy, approvals and dead letters.

use dispatch_core::EventKind;
use dispatch_core::{Status, Transition};
use serde_json::json;

use super::{all_events, id, new_run, start, step};
use crate::{Approval, Created, DeadLetter, Decision, RunExtras, Store, StoreError};

fn keyed(key: &str) -> RunExtras {
    RunExtras {
        idempotency_key: Some(key.into()),
        ..RunExtras::default()
    }
}

async fn create_with<S: Store>(store: &S, n: u128, extras: &RunExtras, dedupe: bool) -> Created {
    store
        .create_run_with(&new_run(id(n), "dedup", n as i64), extras, dedupe)
        .await
        .expect("create_run_with succeeds")
}

pub async fn extras_round_trip_with_the_run<S: Store>(store: S) {
    let extras = RunExtras {
        idempotency_key: Some("k1".into()),
        session: Some("chat/alice".into()),
        policy: Some(json!({"retry": {"max_attempts": 3}, "timeouts": {"run_ms": 500}})),
        keep_workspace: true,
        concurrency: None,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        events: Vec::new(),
        review: None,
    };
    let created = create_with(&store, 1, &extras, true).await;
    let Created::New(run) = created else {
        panic!("nothing had the key yet, so the run is new")
    };
    assert_eq!(run.status(), Status::Queued);
    assert_eq!(store.run_extras(&run.id).await.expect("extras"), extras);
    let plain = super::create(&store, new_run(id(2), "plain", 2)).await;
    assert_eq!(
        store.run_extras(&plain.id).await.expect("extras"),
        RunExtras::default(),
        "a plainly created run has no extras"
    );
    let err = store.run_extras(&id(99)).await.expect_err("unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn a_live_or_succeeded_run_with_the_same_key_is_returned_instead<S: Store>(store: S) {
    let Created::New(first) = create_with(&store, 1, &keyed("k"), true).await else {
        panic!("first is new")
    };
    let again = create_with(&store, 2, &keyed("k"), true).await;
    assert_eq!(
        again,
        Created::Existing(first.clone()),
        "queued counts as live"
    );
    assert!(
        matches!(store.get_run(&id(2)).await, Err(StoreError::NotFound(_))),
        "nothing was inserted for the duplicate"
    );
    // Succeeded: still deduplicated.
    let running = start(&store, &first, 10).await;
    let done = step(&store, &running, Transition::Exited { code: 0, at: 20 }).await;
    let again = create_with(&store, 3, &keyed("k"), true).await;
    assert_eq!(
        again,
        Created::Existing(done),
        "a succeeded run answers too"
    );
    // Another key is independent.
    assert!(matches!(
        create_with(&store, 4, &keyed("other"), true).await,
        Created::New(_)
    ));
}

pub async fn a_failed_run_with_the_key_does_not_block_and_force_skips_the_check<S: Store>(
    store: S,
) {
    let Created::New(first) = create_with(&store, 1, &keyed("k"), true).await else {
        panic!("first is new")
    };
    let forced = create_with(&store, 2, &keyed("k"), false).await;
    assert!(
        matches!(forced, Created::New(_)),
        "dedupe=false always creates"
    );
    for run in [first, store.get_run(&id(2)).await.expect("forced run")] {
        let running = start(&store, &run, 10).await;
        step(&store, &running, Transition::Exited { code: 1, at: 20 }).await;
    }
    let retry = create_with(&store, 3, &keyed("k"), true).await;
    assert!(
        matches!(retry, Created::New(ref r) if r.id == id(3)),
        "failed runs do not deduplicate: {retry:?}"
    );
}

pub async fn a_session_held_by_a_live_run_is_refused_until_it_ends<S: Store>(store: S) {
    let session = RunExtras {
        session: Some("chat/alice".into()),
        ..RunExtras::default()
    };
    let Created::New(holder) = create_with(&store, 1, &session, false).await else {
        panic!("new")
    };
    let err = store
        .create_run_with(&new_run(id(2), "chat", 2), &session, false)
        .await
        .expect_err("the session is held");
    match err {
        StoreError::SessionBusy { session, run } => {
            assert_eq!(session, "chat/alice");
            assert_eq!(run, holder.id, "the error names the live run");
        }
        other => panic!("expected SessionBusy, got {other:?}"),
    }
    let running = start(&store, &holder, 10).await;
    step(&store, &running, Transition::Exited { code: 0, at: 20 }).await;
    assert!(matches!(
        create_with(&store, 3, &session, false).await,
        Created::New(_)
    ));
}

pub(super) fn approval(run: u128, name: &str, at: i64) -> Approval {
    Approval {
        run_id: id(run),
        id: name.into(),
        attempt: 1,
        summary: format!("may I {name}?"),
        requested_at: at,
        deadline: Some(at + 1000),
        decision: None,
        decided_by: None,
        rationale: None,
        decided_at: None,
        details: None,
        input: None,
    }
}

pub async fn an_approval_is_requested_once_and_decided_once<S: Store>(store: S) {
    super::create(&store, new_run(id(1), "ask", 1)).await;
    let asked = store
        .request_approval(&approval(1, "send", 10))
        .await
        .expect("request");
    assert_eq!(asked, approval(1, "send", 10));
    let again = store
        .request_approval(&approval(1, "send", 50))
        .await
        .expect("asking again");
    assert_eq!(again, asked, "asking again keeps the first request");
    assert_eq!(
        store.list_approvals(None, true).await.expect("list"),
        vec![asked.clone()]
    );
    let d = Decision {
        decision: "approve".into(),
        by: "ada".into(),
        rationale: Some("looks right".into()),
        at: 30,
        input: None,
    };
    let decided = store
        .decide_approval(&id(1), "send", &d)
        .await
        .expect("decide");
    assert_eq!(decided.decision.as_deref(), Some("approve"));
    assert_eq!(decided.decided_by.as_deref(), Some("ada"));
    assert_eq!(decided.rationale.as_deref(), Some("looks right"));
    assert_eq!(decided.decided_at, Some(30));
    let deny = Decision {
        decision: "deny".into(),
        ..d
    };
    let err = store
        .decide_approval(&id(1), "send", &deny)
        .await
        .expect_err("decided already");
    assert!(matches!(err, StoreError::AlreadyDecided { .. }), "{err:?}");
    let err = store
        .decide_approval(&id(1), "nope", &deny)
        .await
        .expect_err("unknown approval");
    assert!(
        matches!(err, StoreError::ApprovalNotFound { .. }),
        "{err:?}"
    );
    assert!(
        store
            .list_approvals(None, true)
            .await
            .expect("list")
            .is_empty()
    );
    let all = store
        .list_approvals(Some(&id(1)), false)
        .await
        .expect("list");
    assert_eq!(all, vec![decided], "the decision is on the record");
    let kinds: Vec<String> = all_events(&store, &id(1))
        .await
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(kinds, ["created", "approval_requested", "approval_decided"]);
}

pub async fn a_pending_approval_ends_cancelled_with_its_run<S: Store>(store: S) {
    let run = super::create(&store, new_run(id(1), "ask", 1)).await;
    let running = start(&store, &run, 10).await;
    for name in ["send", "pay"] {
        store
            .request_approval(&approval(1, name, 20))
            .await
            .expect("request");
    }
    let d = Decision {
        decision: "approve".into(),
        by: "ada".into(),
        rationale: None,
        at: 30,
        input: None,
    };
    store
        .decide_approval(&id(1), "pay", &d)
        .await
        .expect("decide");
    let paused = step(
        &store,
        &running,
        Transition::Pause {
            reason: "approval".into(),
            at: 35,
        },
    )
    .await;
    step(
        &store,
        &paused,
        Transition::Cancel {
            reason: "stopped by ada".into(),
            exit_code: None,
            at: 40,
        },
    )
    .await;
    assert!(
        store
            .list_approvals(None, true)
            .await
            .expect("list")
            .is_empty(),
        "nothing of an ended run is left pending"
    );
    let all = store
        .list_approvals(Some(&id(1)), false)
        .await
        .expect("list");
    let send = all.iter().find(|a| a.id == "send").expect("send");
    assert_eq!(send.decision.as_deref(), Some(crate::ENDED_DECISION));
    assert_eq!(send.decided_by.as_deref(), Some("dispatch"));
    assert_eq!(send.decided_at, Some(40));
    let pay = all.iter().find(|a| a.id == "pay").expect("pay");
    assert_eq!(
        pay.decision.as_deref(),
        Some("approve"),
        "a decision stands"
    );
    let err = store
        .decide_approval(&id(1), "send", &d)
        .await
        .expect_err("decided by the run's end");
    assert!(matches!(err, StoreError::AlreadyDecided { .. }), "{err:?}");
    let decided: Vec<serde_json::Value> = all_events(&store, &id(1))
        .await
        .into_iter()
        .filter(|e| e.event.is(EventKind::ApprovalDecided))
        .map(|e| e.event.data)
        .collect();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(decided[1]["id"], "send");
    assert_eq!(decided[1]["decision"], crate::ENDED_DECISION);
}

pub async fn dead_letters_list_newest_first_and_record_their_replay<S: Store>(store: S) {
    for n in [1, 2] {
        let run = super::create(&store, new_run(id(n), "dlq", n as i64)).await;
        let running = start(&store, &run, 10).await;
        step(&store, &running, Transition::Exited { code: 3, at: 20 }).await;
        let letter = DeadLetter {
            run_id: id(n),
            at: 100 + n as i64,
            reason: "agent exited with code 3".into(),
            attempts: 2,
            checkpoint: Some(json!({"step": "two"})),
            errors: json!([{"attempt": 1, "error": "boom"}]),
            replayed_by: None,
        };
        store.add_dead_letter(&letter).await.expect("dead-letter");
        let mut later = letter.clone();
        later.reason = "again".into();
        store.add_dead_letter(&later).await.expect("again is fine");
    }
    let letters = store.list_dead_letters().await.expect("list");
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].run_id, id(2), "newest first");
    assert_eq!(
        letters[1].reason, "agent exited with code 3",
        "first record kept"
    );
    assert_eq!(letters[1].checkpoint, Some(json!({"step": "two"})));
    store.mark_replayed(&id(1), &id(3)).await.expect("replayed");
    let letters = store.list_dead_letters().await.expect("list");
    assert_eq!(letters[1].replayed_by, Some(id(3)));
    assert_eq!(
        store.dead_letter(&id(1)).await.expect("one"),
        Some(letters[1].clone())
    );
    assert_eq!(store.dead_letter(&id(9)).await.expect("none"), None);
    let err = store
        .add_dead_letter(&DeadLetter {
            run_id: id(9),
            ..letters[0].clone()
        })
        .await
        .expect_err("unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    // Deleting the run removes its dead letter and approvals.
    store.delete_run(&id(2)).await.expect("delete");
    assert_eq!(store.list_dead_letters().await.expect("list").len(), 1);
}

pub async fn a_timed_out_attempt_requeued_keeps_its_status<S: Store>(store: S) {
    let run = super::create(&store, new_run(id(1), "slow", 1)).await;
    let running = start(&store, &run, 10).await;
    let state = running
        .state
        .apply(
            running.operation,
            &Transition::Requeue {
                not_before: Some(500),
                at: 30,
            },
        )
        .expect("requeue");
    let write = crate::StateWrite::new(
        state,
        dispatch_core::NewEvent::new(
            EventKind::State,
            1,
            30,
            json!({"from": "running", "to": "queued", "reason": "run timed out after 1s",
                   "attempt_status": "timed_out"}),
        ),
    );
    let queued = store
        .transition(&running.id, running.version, &write)
        .await
        .expect("requeue");
    assert_eq!(queued.attempt, 2);
    let attempts = store.list_attempts(&run.id).await.expect("attempts");
    assert_eq!(attempts[0].status, Some(Status::TimedOut));
    assert_eq!(attempts[0].error.as_deref(), Some("run timed out after 1s"));
}
