//! The request bodies as a client writes them: a field left at its default
//! is not written (the server reads its absence as that default), what is
//! written reads back as the same request, and the bodies the server reads
//! by hand keep the field names it looks for.

use dispatch_api::{
    CreateRun, CreateRuns, CreateService, DecideBody, PruneSessions, QuotaBody, ReplayBody,
    SignalBody, WakeRequest,
};
use dispatch_core::Operation;
use serde_json::{Value, json};

fn wire(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).expect("a request body is plain data")
}

#[test]
fn a_run_request_writes_only_what_was_chosen() {
    let bare = CreateRun {
        parcel: "hello".into(),
        ..Default::default()
    };
    assert_eq!(wire(&bare), json!({"parcel": "hello"}));

    let chosen = CreateRun {
        parcel: "hello".into(),
        payload: Some(json!({"n": 1})),
        operation: Some(Operation::Job),
        labels: vec!["gpu".into()],
        dedup: true,
        start: Some(false),
        concurrency_strategy: Some("cancel-in-progress".parse().expect("a strategy")),
        ..Default::default()
    };
    let sent = wire(&chosen);
    assert_eq!(
        sent,
        json!({
            "parcel": "hello",
            "payload": {"n": 1},
            "operation": "job",
            "labels": ["gpu"],
            "dedup": true,
            "start": false,
            "concurrency_strategy": "cancel-in-progress",
        })
    );
    let read: CreateRun = serde_json::from_value(sent.clone()).expect("the server reads it");
    assert_eq!(wire(&read), sent);
    let batch = CreateRuns { runs: vec![read] };
    assert_eq!(wire(&batch), json!({ "runs": [sent] }));
}

#[test]
fn a_null_payload_is_still_sent() {
    // `--payload null` means the value null, not "no payload".
    let run = CreateRun {
        parcel: "p".into(),
        payload: Some(Value::Null),
        ..Default::default()
    };
    assert_eq!(wire(&run), json!({"parcel": "p", "payload": null}));
    let wake = WakeRequest {
        payload: Some(json!({})),
    };
    assert_eq!(wire(&wake), json!({"payload": {}}));
    assert_eq!(wire(&ReplayBody::default()), json!({}));
}

#[test]
fn a_service_restart_names_only_the_old_service() {
    let restart = CreateService {
        restart_of: Some("01abc".into()),
        ..Default::default()
    };
    assert_eq!(wire(&restart), json!({"restart_of": "01abc"}));
}

#[test]
fn decisions_and_signals_keep_their_required_fields() {
    let decide = DecideBody {
        decision: "approve".into(),
        by: "ada".into(),
        rationale: None,
        input: None,
    };
    assert_eq!(wire(&decide), json!({"decision": "approve", "by": "ada"}));
    let signal = SignalBody {
        name: "go".into(),
        value: Value::Null,
    };
    assert_eq!(wire(&signal), json!({"name": "go", "value": null}));
}

#[test]
fn hand_read_bodies_use_the_names_the_server_looks_for() {
    let quota = QuotaBody {
        tokens_per_day: Some("2M".into()),
        soft: Some("80%".into()),
        ..Default::default()
    };
    assert_eq!(wire(&quota), json!({"tokens_per_day": "2M", "soft": "80%"}));
    let prune = PruneSessions {
        until: "24h".into(),
        prefix: None,
    };
    assert_eq!(wire(&prune), json!({"until": "24h"}));
}
