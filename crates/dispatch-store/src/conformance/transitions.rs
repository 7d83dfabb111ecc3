//! Compare-and-set state changes, their events, and the attempts they keep.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunState, Status, Transition};
use serde_json::json;

use super::{AGENT, HELPER, all_events, create, id, new_run, start, step, write_for};
use crate::{Run, StateWrite, Store, StoreError};

async fn queued<S: Store>(store: &S) -> Run {
    create(store, new_run(id(1), "p", 10)).await
}

pub async fn a_transition_at_the_current_version_succeeds_and_bumps_it<S: Store>(store: S) {
    let run = queued(&store).await;
    let claim = Transition::Claim {
        helper: HELPER,
        at: 20,
    };
    let write = write_for(&run, &claim);
    let next = store
        .transition(&run.id, 1, &write)
        .await
        .expect("the current version wins");
    assert_eq!(next.version, 2);
    assert_eq!(next.state, write.state);
    assert_eq!(next.status(), Status::Starting);
    assert_eq!(next.updated_at, 20, "updated at the transition's time");
    assert_eq!(next.created_at, run.created_at);
    assert_eq!(next.payload, run.payload);
    let read = store.get_run(&run.id).await.expect("get");
    assert_eq!(read, next, "transition returns what is stored");
}

pub async fn a_stale_version_conflicts_and_leaves_run_and_log_unchanged<S: Store>(store: S) {
    let run = queued(&store).await;
    let moved = step(
        &store,
        &run,
        Transition::Claim {
            helper: HELPER,
            at: 20,
        },
    )
    .await;
    let before_events = all_events(&store, &run.id).await;
    // A writer still holding version 1 tries to fail the run.
    let stale = write_for(
        &run,
        &Transition::Fail {
            reason: "late writer".into(),
            exit_code: None,
            at: 30,
        },
    );
    let err = store
        .transition(&run.id, run.version, &stale)
        .await
        .expect_err("a stale version loses");
    assert!(
        matches!(&err, StoreError::Conflict { id: got, expected: 1 } if *got == run.id),
        "Conflict naming the run and the stale version, got {err:?}"
    );
    let after = store.get_run(&run.id).await.expect("get");
    assert_eq!(after, moved, "the run is as the winner left it");
    assert_eq!(
        all_events(&store, &run.id).await,
        before_events,
        "the loser's event was not recorded"
    );
    let err = store
        .transition(&run.id, 99, &stale)
        .await
        .expect_err("a future version also conflicts");
    assert!(matches!(err, StoreError::Conflict { expected: 99, .. }));
}

pub async fn every_transition_appends_exactly_one_event<S: Store>(store: S) {
    let mut run = queued(&store).await;
    let path = [
        Transition::Claim {
            helper: HELPER,
            at: 20,
        },
        Transition::AgentStarted {
            agent: AGENT,
            at: 21,
        },
        Transition::Pause {
            reason: "approval send-email".into(),
            at: 22,
        },
        Transition::Resume { at: 23 },
        Transition::Exited { code: 0, at: 24 },
    ];
    for (n, t) in path.into_iter().enumerate() {
        let before = all_events(&store, &run.id).await;
        let write = write_for(&run, &t);
        run = store
            .transition(&run.id, run.version, &write)
            .await
            .expect("legal transition");
        let after = all_events(&store, &run.id).await;
        assert_eq!(
            after.len(),
            before.len() + 1,
            "transition {n} adds one event"
        );
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "earlier events are untouched"
        );
        let last = after.last().expect("one event was added");
        assert_eq!(last.event, write.event, "the event is stored as given");
        assert_eq!(last.run_id, run.id);
        assert!(
            last.seq > before.last().map_or(0, |e| e.seq),
            "seq increases"
        );
    }
    assert_eq!(run.version, 6);
    assert_eq!(run.status(), Status::Succeeded);
}

pub async fn a_racing_writer_on_the_same_version_loses<S: Store>(store: S) {
    let run = start(&store, &queued(&store).await, 20).await;
    // Two owners read the same version: the agent exits while someone cancels.
    let exit = write_for(&run, &Transition::Exited { code: 0, at: 30 });
    let cancel = write_for(
        &run,
        &Transition::Cancel {
            reason: "stopped by user".into(),
            exit_code: None,
            at: 31,
        },
    );
    let winner = store
        .transition(&run.id, run.version, &exit)
        .await
        .expect("the first writer wins");
    let err = store
        .transition(&run.id, run.version, &cancel)
        .await
        .expect_err("the second writer on the same version loses");
    assert!(matches!(err, StoreError::Conflict { .. }), "got {err:?}");
    // The loser reloads and decides again: a finished run takes no transition.
    let reloaded = store.get_run(&run.id).await.expect("get");
    assert_eq!(reloaded, winner);
    assert!(
        reloaded
            .state
            .apply(
                reloaded.operation,
                &Transition::Cancel {
                    reason: "stopped by user".into(),
                    exit_code: None,
                    at: 32,
                }
            )
            .is_err(),
        "the state machine refuses to leave a terminal state"
    );
    let stored: Vec<_> = all_events(&store, &run.id)
        .await
        .into_iter()
        .filter(|e| e.event.at >= 30)
        .collect();
    assert_eq!(stored.len(), 1, "only the winner's event is in the log");
    assert_eq!(stored[0].event, exit.event);
}

pub async fn a_terminal_run_refuses_further_transitions<S: Store>(store: S) {
    let run = queued(&store).await;
    let done = step(
        &store,
        &run,
        Transition::Fail {
            reason: "brief assembly failed".into(),
            exit_code: None,
            at: 20,
        },
    )
    .await;
    assert_eq!(done.status(), Status::Failed);
    let events_before = all_events(&store, &run.id).await;
    // Even a write at the current version (a caller bypassing the state
    // machine) cannot bring a finished run back.
    let revive = StateWrite::new(
        RunState::queued(),
        NewEvent::new(EventKind::State, 1, 30, json!({"to": "queued"})),
    );
    let err = store
        .transition(&run.id, done.version, &revive)
        .await
        .expect_err("a terminal run never changes");
    assert!(
        matches!(
            &err,
            StoreError::InvalidState {
                status: Status::Failed,
                ..
            }
        ),
        "InvalidState naming the terminal status, got {err:?}"
    );
    assert_eq!(store.get_run(&run.id).await.expect("get"), done);
    assert_eq!(all_events(&store, &run.id).await, events_before);
}

pub async fn an_attempt_opens_on_running_and_closes_with_the_exit_code<S: Store>(store: S) {
    let run = queued(&store).await;
    let starting = step(
        &store,
        &run,
        Transition::Claim {
            helper: HELPER,
            at: 20,
        },
    )
    .await;
    let attempts = store.list_attempts(&run.id).await.expect("attempts");
    assert!(attempts.is_empty(), "starting is not yet an attempt");
    let running = step(
        &store,
        &starting,
        Transition::AgentStarted {
            agent: AGENT,
            at: 25,
        },
    )
    .await;
    let attempts = store.list_attempts(&run.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "running opens the attempt");
    let open = &attempts[0];
    assert_eq!(open.number, running.attempt);
    assert_eq!(open.started_at, 25);
    assert_eq!(
        (open.ended_at, open.status, open.exit_code),
        (None, None, None)
    );
    assert_eq!(open.error, None);

    step(&store, &running, Transition::Exited { code: 3, at: 40 }).await;
    let attempts = store.list_attempts(&run.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    let closed = &attempts[0];
    assert_eq!(closed.started_at, 25);
    assert_eq!(closed.ended_at, Some(40));
    assert_eq!(closed.status, Some(Status::Failed));
    assert_eq!(closed.exit_code, Some(3));
    assert_eq!(closed.error.as_deref(), Some("agent exited with code 3"));
}

pub async fn a_paused_run_keeps_its_attempt_open<S: Store>(store: S) {
    let running = start(&store, &queued(&store).await, 20).await;
    let paused = step(
        &store,
        &running,
        Transition::Pause {
            reason: "approval".into(),
            at: 30,
        },
    )
    .await;
    let resumed = step(&store, &paused, Transition::Resume { at: 40 }).await;
    let attempts = store.list_attempts(&running.id).await.expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "pausing and resuming stays in one attempt"
    );
    assert_eq!(attempts[0].ended_at, None);
    step(&store, &resumed, Transition::Exited { code: 0, at: 50 }).await;
    let attempts = store.list_attempts(&running.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(Status::Succeeded));
    assert_eq!(attempts[0].exit_code, Some(0));
    assert_eq!(attempts[0].error, None);
    assert_eq!(attempts[0].ended_at, Some(50));
}

pub async fn a_requeue_starts_a_new_attempt_and_closes_the_old_one<S: Store>(store: S) {
    let first = start(&store, &queued(&store).await, 20).await;
    assert_eq!(first.attempt, 1);
    let requeue = Transition::Requeue {
        not_before: Some(100),
        at: 30,
    };
    let mut write = write_for(&first, &requeue);
    write.event.data = json!({"reason": "agent exited with code 2", "exit_code": 2});
    let again = store
        .transition(&first.id, first.version, &write)
        .await
        .expect("requeue");
    assert_eq!(again.attempt, 2, "a requeue is a new attempt");
    assert_eq!(
        again.state,
        RunState::Queued {
            not_before: Some(100)
        }
    );

    let attempts = store.list_attempts(&first.id).await.expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "the next attempt opens only when it runs"
    );
    assert_eq!(attempts[0].number, 1);
    assert_eq!(attempts[0].ended_at, Some(30), "the old attempt is closed");
    assert_eq!(attempts[0].status, Some(Status::Failed));
    assert_eq!(attempts[0].exit_code, Some(2));
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("agent exited with code 2")
    );

    let second = start(&store, &again, 200).await;
    assert_eq!(second.attempt, 2, "running again does not bump the attempt");
    step(&store, &second, Transition::Exited { code: 0, at: 300 }).await;
    let attempts = store.list_attempts(&first.id).await.expect("attempts");
    let numbers: Vec<u32> = attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, vec![1, 2], "attempts list in order");
    assert_eq!(attempts[1].started_at, 201);
    assert_eq!(attempts[1].status, Some(Status::Succeeded));
    assert_eq!(
        attempts[0].status,
        Some(Status::Failed),
        "the first is unchanged"
    );
}

pub async fn output_is_stored_with_the_transition_and_kept_after<S: Store>(store: S) {
    let running = start(&store, &queued(&store).await, 20).await;
    let mut write = write_for(&running, &Transition::Exited { code: 0, at: 30 });
    write.output = Some(json!({"answer": 42, "notes": ["ok"]}));
    let done = store
        .transition(&running.id, running.version, &write)
        .await
        .expect("exit with output");
    assert_eq!(done.output, write.output);
    assert_eq!(
        store.get_run(&running.id).await.expect("get").output,
        write.output
    );
    assert_eq!(running.output, None, "no output before the run has one");
}

/// A claimed run's agent starting and exiting, as one call: the writes a
/// runtime makes when the agent was done before its start was saved.
fn start_and_exit(starting: &Run, code: i32) -> Vec<StateWrite> {
    let up = write_for(
        starting,
        &Transition::AgentStarted {
            agent: AGENT,
            at: 25,
        },
    );
    let mut running = starting.clone();
    running.state = up.state.clone();
    let mut down = write_for(&running, &Transition::Exited { code, at: 40 });
    down.output = Some(json!({"answer": 42}));
    vec![up, down]
}

pub async fn several_transitions_save_at_once_with_every_event_and_the_attempt<S: Store>(store: S) {
    let run = queued(&store).await;
    let starting = step(
        &store,
        &run,
        Transition::Claim {
            helper: HELPER,
            at: 20,
        },
    )
    .await;
    let before = all_events(&store, &run.id).await;
    let mut writes = start_and_exit(&starting, 0);
    // What a quick agent wrote, saved with its start.
    writes[0].then = vec![
        NewEvent::new(EventKind::Message, 1, 30, json!({"to": "__next__"})),
        NewEvent::new(EventKind::Step, 1, 31, json!({"name": "done"})),
    ];
    let done = store
        .transitions(&run.id, starting.version, &writes)
        .await
        .expect("a legal row of transitions at the current version");
    assert_eq!(done.version, starting.version + 2, "one version per write");
    assert_eq!(done.state, writes[1].state);
    assert_eq!(done.status(), Status::Succeeded);
    assert_eq!(done.output, Some(json!({"answer": 42})));
    assert_eq!(done.updated_at, 40, "updated at the last write's time");
    assert_eq!(store.get_run(&run.id).await.expect("get"), done);
    let after = all_events(&store, &run.id).await;
    assert_eq!(&after[..before.len()], &before[..]);
    let added: Vec<_> = after[before.len()..].iter().map(|e| &e.event).collect();
    assert_eq!(
        added,
        vec![
            &writes[0].event,
            &writes[0].then[0],
            &writes[0].then[1],
            &writes[1].event
        ],
        "every write's event, each followed by its `then`, in order"
    );
    let attempts = store.list_attempts(&run.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "the attempt opened and closed");
    let a = &attempts[0];
    assert_eq!(
        (a.number, a.started_at, a.ended_at, a.status, a.exit_code),
        (1, 25, Some(40), Some(Status::Succeeded), Some(0))
    );
}

pub async fn several_transitions_on_a_stale_version_save_nothing<S: Store>(store: S) {
    let run = queued(&store).await;
    let starting = step(
        &store,
        &run,
        Transition::Claim {
            helper: HELPER,
            at: 20,
        },
    )
    .await;
    let before = all_events(&store, &run.id).await;
    let err = store
        .transitions(&run.id, run.version, &start_and_exit(&starting, 0))
        .await
        .expect_err("a stale version loses");
    assert!(matches!(err, StoreError::Conflict { .. }), "got {err:?}");
    // A write after an end is refused as a whole, the first write too.
    let mut past_the_end = start_and_exit(&starting, 3);
    past_the_end.push(past_the_end[1].clone());
    let err = store
        .transitions(&run.id, starting.version, &past_the_end)
        .await
        .expect_err("nothing follows an end");
    assert!(
        matches!(err, StoreError::InvalidState { .. }),
        "got {err:?}"
    );
    assert_eq!(store.get_run(&run.id).await.expect("get"), starting);
    assert_eq!(all_events(&store, &run.id).await, before, "no event saved");
    assert!(
        store
            .list_attempts(&run.id)
            .await
            .expect("attempts")
            .is_empty()
    );
}

pub async fn a_run_created_claimed_starts_held_by_its_helper<S: Store>(store: S) {
    let mut new = new_run(id(1), "p", 10);
    new.claimed_by = Some(HELPER);
    let run = create(&store, new).await;
    assert_eq!(run.status(), Status::Starting);
    assert_eq!(run.state.helper(), Some(HELPER));
    assert_eq!(run.version, 2, "created, then claimed");
    let events = all_events(&store, &run.id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(kinds, ["created", "state"]);
    assert_eq!(events[1].event.data["from"], json!("queued"));
    assert_eq!(events[1].event.data["to"], json!("starting"));
    assert_eq!(store.get_run(&run.id).await.expect("get"), run);

    // Its helper goes on from there as if it had claimed it.
    let t = Transition::AgentStarted {
        agent: AGENT,
        at: 20,
    };
    let running = store
        .transition(&run.id, run.version, &write_for(&run, &t))
        .await
        .expect("the helper starts the agent");
    assert_eq!(running.status(), Status::Running);
}

pub async fn a_suspended_run_holds_nothing_and_a_wake_is_its_next_attempt<S: Store>(store: S) {
    let first = start(&store, &queued(&store).await, 20).await;
    let wait = dispatch_core::Wait {
        wait_for: dispatch_core::WaitFor::Signal,
        name: "go".into(),
        until: None,
    };
    let suspended = step(&store, &first, Transition::Suspend { wait, at: 30 }).await;
    assert_eq!(suspended.status(), Status::Paused, "shown as paused");
    assert_eq!(suspended.state.helper(), None, "no helper holds it");
    assert_eq!(suspended.state.agent(), None, "no agent runs");
    assert_eq!(suspended.attempt, 1);
    let paused = store
        .list_runs(&crate::RunFilter {
            statuses: vec![Status::Paused],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(paused.len(), 1, "listed as paused");
    let attempts = store.list_attempts(&first.id).await.expect("attempts");
    assert_eq!(
        attempts[0].ended_at,
        Some(30),
        "the attempt ends at the suspend"
    );
    assert_eq!(attempts[0].status, Some(Status::Succeeded));
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("suspended: waiting for signal `go`")
    );

    let woken = step(&store, &suspended, Transition::Wake { at: 40 }).await;
    assert_eq!(
        woken.state,
        RunState::Queued {
            not_before: Some(40)
        }
    );
    assert_eq!(woken.attempt, 2, "the wake queues the next attempt");
    let attempts = store.list_attempts(&first.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].ended_at,
        Some(30),
        "closed once, at the suspend"
    );
    assert_eq!(attempts[0].status, Some(Status::Succeeded));
}
