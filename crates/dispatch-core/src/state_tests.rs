use proptest::prelude::*;

use super::*;

const H: ProcRef = ProcRef {
    pid: 10,
    start_ticks: 1,
};
const A: ProcRef = ProcRef {
    pid: 11,
    start_ticks: 2,
};

fn running() -> RunState {
    RunState::queued()
        .apply(Operation::Job, &Transition::Claim { helper: H, at: 1 })
        .and_then(|s| {
            s.apply(
                Operation::Job,
                &Transition::AgentStarted { agent: A, at: 2 },
            )
        })
        .expect("queued -> starting -> running is legal")
}

#[test]
fn a_job_runs_to_success_and_carries_its_times() {
    let done = running()
        .apply(Operation::Job, &Transition::Exited { code: 0, at: 9 })
        .expect("running -> succeeded");
    assert_eq!(
        done,
        RunState::Succeeded {
            started_at: Some(2),
            ended_at: 9,
            exit_code: 0
        }
    );
}

#[test]
fn a_non_zero_exit_fails_with_the_code() {
    let done = running()
        .apply(Operation::Job, &Transition::Exited { code: 3, at: 9 })
        .expect("running -> failed");
    assert_eq!(done.status(), Status::Failed);
    assert_eq!(done.exit_code(), Some(3));
}

#[test]
fn a_stopped_service_is_stopped_and_a_stopped_job_cancelled() {
    let cancel = Transition::Cancel {
        reason: "stopped by user".into(),
        exit_code: Some(143),
        at: 5,
    };
    assert_eq!(
        running()
            .apply(Operation::Job, &cancel)
            .expect("legal")
            .status(),
        Status::Cancelled
    );
    assert_eq!(
        running()
            .apply(Operation::Service, &cancel)
            .expect("legal")
            .status(),
        Status::Stopped
    );
}

#[test]
fn a_lost_helper_fails_a_job_and_stops_a_service() {
    let lost = Transition::Lost {
        reason: "helper died".into(),
        at: 5,
    };
    assert_eq!(
        running()
            .apply(Operation::Heartbeat, &lost)
            .expect("legal")
            .status(),
        Status::Failed
    );
    assert_eq!(
        running()
            .apply(Operation::Service, &lost)
            .expect("legal")
            .status(),
        Status::Stopped
    );
}

#[test]
fn a_queued_run_cannot_exit() {
    let err = RunState::queued()
        .apply(Operation::Job, &Transition::Exited { code: 0, at: 1 })
        .expect_err("queued runs have no process");
    assert_eq!(err.to_string(), "a queued run cannot exited");
}

#[test]
fn a_queued_run_nobody_claimed_times_out_without_a_start() {
    let next = RunState::queued()
        .apply(
            Operation::Job,
            &Transition::TimeOut {
                reason: "queue timeout".into(),
                exit_code: None,
                at: 9,
            },
        )
        .expect("a queue timeout ends a queued run");
    assert_eq!(next.status(), Status::TimedOut);
    assert_eq!(next.started_at(), None);
    assert_eq!(next.ended_at(), Some(9));
    assert_eq!(next.reason(), Some("queue timeout"));
}

#[test]
fn state_round_trips_through_json() {
    let s = running();
    let json = serde_json::to_string(&s).expect("serializable");
    assert!(json.contains("\"status\":\"running\""), "{json}");
    let back: RunState = serde_json::from_str(&json).expect("deserializable");
    assert_eq!(back, s);
}

#[test]
fn a_run_in_review_is_approved_into_the_queue_or_denied_cancelled() {
    let review = RunState::Review {
        reason: "deploys need a person".into(),
        since: 1,
    };
    assert_eq!(review.status(), Status::Review);
    assert_eq!(review.reason(), Some("deploys need a person"));
    assert_eq!(
        (review.helper(), review.agent(), review.started_at()),
        (None, None, None)
    );
    let approved = review
        .apply(Operation::Job, &Transition::Approve { at: 2 })
        .expect("review -> queued");
    assert_eq!(
        approved,
        RunState::Queued {
            not_before: Some(2)
        }
    );
    let deny = Transition::Cancel {
        reason: "denied in review by ada".into(),
        exit_code: None,
        at: 3,
    };
    let denied = review
        .apply(Operation::Job, &deny)
        .expect("review -> cancelled");
    assert_eq!(
        denied,
        RunState::Cancelled {
            started_at: None,
            ended_at: 3,
            exit_code: None,
            reason: "denied in review by ada".into(),
        }
    );
    let service = review.apply(Operation::Service, &deny).expect("legal");
    assert_eq!(service.status(), Status::Stopped);
    // Nothing else moves it: no claim, no process, no approval twice.
    for t in [
        Transition::Claim { helper: H, at: 4 },
        Transition::Start { at: 4 },
        Transition::Exited { code: 0, at: 4 },
        Transition::Lost {
            reason: "x".into(),
            at: 4,
        },
    ] {
        let e = review.apply(Operation::Job, &t).expect_err("refused");
        assert_eq!(e.from, Status::Review);
    }
    let e = approved
        .apply(Operation::Job, &Transition::Approve { at: 5 })
        .expect_err("a queued run is not in review");
    assert_eq!(e.to_string(), "a queued run cannot approve");
}

fn any_transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        Just(Transition::Approve { at: 0 }),
        Just(Transition::Claim { helper: H, at: 1 }),
        Just(Transition::AgentStarted { agent: A, at: 2 }),
        Just(Transition::Pause {
            reason: "approval".into(),
            at: 3
        }),
        Just(Transition::Resume { at: 4 }),
        (0..256i32).prop_map(|code| Transition::Exited { code, at: 5 }),
        Just(Transition::Fail {
            reason: "x".into(),
            exit_code: None,
            at: 6
        }),
        Just(Transition::TimeOut {
            reason: "x".into(),
            exit_code: None,
            at: 7
        }),
        Just(Transition::Cancel {
            reason: "x".into(),
            exit_code: None,
            at: 8
        }),
        Just(Transition::Lost {
            reason: "x".into(),
            at: 9
        }),
        Just(Transition::Requeue {
            not_before: None,
            at: 10
        }),
    ]
}

fn any_operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Job),
        Just(Operation::Heartbeat),
        Just(Operation::Service)
    ]
}

proptest! {
    /// Nothing leaves a terminal state, whatever happens to the run.
    #[test]
    fn nothing_leaves_a_terminal_state(
        op in any_operation(),
        steps in proptest::collection::vec(any_transition(), 0..30),
    ) {
        let mut state = RunState::queued();
        let mut terminal: Option<RunState> = None;
        for t in &steps {
            match state.apply(op, t) {
                Ok(next) => {
                    prop_assert!(terminal.is_none(), "left terminal {:?} via {:?}", terminal, t);
                    state = next;
                    if state.is_terminal() {
                        terminal = Some(state.clone());
                    }
                }
                Err(e) => prop_assert_eq!(e.from, state.status()),
            }
        }
        if let Some(t) = terminal {
            prop_assert_eq!(t, state);
        }
    }

    /// Only a run in review is approved, and nothing brings a run back
    /// into review: whatever happens after it, it is never there again.
    #[test]
    fn review_is_left_once_and_only_by_approval_or_cancel(
        op in any_operation(),
        steps in proptest::collection::vec(any_transition(), 0..30),
    ) {
        let mut state = RunState::Review { reason: "x".into(), since: 0 };
        let mut left = false;
        for t in &steps {
            let approvable = state.status() == Status::Review;
            match state.apply(op, t) {
                Ok(next) => {
                    if matches!(t, Transition::Approve { .. }) {
                        prop_assert!(approvable);
                        prop_assert_eq!(&next, &RunState::Queued { not_before: Some(0) });
                    }
                    if approvable {
                        prop_assert!(matches!(t, Transition::Approve { .. } | Transition::Cancel { .. }), "{:?}", t);
                    }
                    state = next;
                }
                Err(e) => prop_assert_eq!(e.from, state.status()),
            }
            left |= state.status() != Status::Review;
            prop_assert!(!(left && state.status() == Status::Review));
        }
    }

    /// A run only carries an agent process while it is running or paused.
    #[test]
    fn only_live_states_own_processes(
        op in any_operation(),
        steps in proptest::collection::vec(any_transition(), 0..30),
    ) {
        let mut state = RunState::queued();
        for t in &steps {
            if let Ok(next) = state.apply(op, t) {
                state = next;
            }
            let live = matches!(state.status(), Status::Running | Status::Paused);
            prop_assert_eq!(state.agent().is_some(), live);
            if state.is_terminal() {
                prop_assert!(state.helper().is_none());
                prop_assert!(state.ended_at().is_some());
            }
        }
    }
}
