use dispatch_core::{NewEvent, Status};
use serde_json::json;

use super::*;

fn ev(seq: i64, attempt: u32, at: i64, data: Value) -> Event {
    Event {
        seq,
        run_id: "0000000000000000000000000000002a".parse().expect("an id"),
        event: NewEvent::new(
            data["type"].as_str().expect("a type").to_string(),
            attempt,
            at,
            data,
        ),
    }
}

fn attempt(number: u32, started_at: Ts, ended_at: Option<Ts>, worker: Option<&str>) -> Attempt {
    Attempt {
        number,
        started_at,
        ended_at,
        status: ended_at.map(|_| Status::Failed),
        exit_code: ended_at.map(|_| 1),
        error: None,
        worker: worker.map(str::to_string),
    }
}

#[test]
fn steps_pair_up_and_open_ones_close_with_their_attempt() {
    let events = [
        ev(1, 1, 100, json!({"type": "step", "name": "plan"})),
        ev(2, 1, 150, json!({"type": "step", "name": "act"})),
        ev(
            3,
            1,
            160,
            json!({"type": "usage", "model": "m", "input_tokens": 5}),
        ),
        ev(
            4,
            2,
            300,
            json!({"type": "step", "name": "act", "phase": "start"}),
        ),
        ev(
            5,
            2,
            340,
            json!({"type": "step", "name": "act", "phase": "end"}),
        ),
    ];
    let attempts = [
        attempt(1, 90, Some(200), Some("local helper 42")),
        attempt(2, 290, None, None),
    ];
    let t = build(&events, &attempts);
    let durations: Vec<Option<i64>> = t.timeline.iter().map(|s| s.duration_ms).collect();
    // plan ends when act starts; act of attempt 1 ends with the attempt.
    assert_eq!(durations, [Some(50), Some(50), Some(40)]);
    assert_eq!(t.attempts[0].usage.input_tokens, 5);
    assert_eq!(t.attempts[1].duration_ms, None);
    assert_eq!(t.usage_by_model["m"].events, 1);
    let a = serde_json::to_value(&t.attempts[0]).expect("json");
    assert_eq!(a["worker"], "local helper 42");
    assert_eq!(a["number"], 1);
    assert_eq!(
        a["usage"],
        json!({"input_tokens": 5, "output_tokens": 0, "cost_usd": 0.0})
    );
}

#[test]
fn a_cluster_services_attempt_says_the_server_ran_it() {
    let t = build(&[], &[attempt(1, 0, Some(5), Some("local helper 0"))]);
    assert_eq!(t.attempts[0].attempt.worker.as_deref(), Some(SERVER_WORKER));
}
