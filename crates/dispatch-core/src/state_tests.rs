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

fn any_transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
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
