//! Batch reads for tracing: a whole batch of finished runs at once.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, Status, Transition};
use serde_json::json;

use super::{create, id, new_run, start, step};
use crate::{RunExtras, Store, TraceStore};

pub async fn finished_traces_read_a_batch_with_attempts_traced_events_and_traceparent<
    S: Store + TraceStore,
>(
    store: S,
) {
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let extras = RunExtras {
        traceparent: Some(parent.into()),
        ..RunExtras::default()
    };
    // 1: finished, with a traceparent and events of every kind.
    store
        .create_run_with(&new_run(id(1), "traced", 1), &extras, false)
        .await
        .expect("create");
    let one = store.get_run(&id(1)).await.expect("get");
    let one = start(&store, &one, 10).await;
    let events = [
        NewEvent::new(
            EventKind::Step,
            1,
            11,
            json!({"name": "plan", "phase": "start"}),
        ),
        NewEvent::new(EventKind::Log, 1, 12, json!({"line": "not traced"})),
        NewEvent::new(
            EventKind::ModelCall,
            1,
            13,
            json!({"model": "m", "latency_ms": 1}),
        ),
        NewEvent::new(
            EventKind::ToolCall,
            1,
            14,
            json!({"name": "search", "ok": true}),
        ),
    ];
    store.append_events(&one.id, &events).await.expect("events");
    step(&store, &one, Transition::Exited { code: 0, at: 20 }).await;
    // 2: finished without extras; 3: still queued; 99: unknown.
    let two = create(&store, new_run(id(2), "plain", 2)).await;
    let two = start(&store, &two, 30).await;
    step(&store, &two, Transition::Exited { code: 1, at: 40 }).await;
    create(&store, new_run(id(3), "queued", 3)).await;

    let mut read = store
        .finished_traces(&[id(3), id(99), id(2), id(1)])
        .await
        .expect("batch read");
    read.sort_by(|a, b| a.run.id.cmp(&b.run.id));
    let ids: Vec<_> = read.iter().map(|t| t.run.id.clone()).collect();
    assert_eq!(
        ids,
        [id(1), id(2)],
        "only finished runs, unknown ids left out"
    );

    let one = &read[0];
    assert_eq!(one.run.status(), Status::Succeeded);
    assert_eq!(one.traceparent.as_deref(), Some(parent));
    assert_eq!(one.attempts.len(), 1);
    assert_eq!(one.attempts[0].exit_code, Some(0));
    let kinds: Vec<&str> = one.events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["step", "model_call", "tool_call"],
        "traced kinds only, in order"
    );
    assert!(one.events.iter().all(|e| e.run_id == id(1)));

    let two = &read[1];
    assert_eq!(two.run.status(), Status::Failed);
    assert_eq!(two.traceparent, None);
    assert_eq!(two.attempts.len(), 1);
    assert!(two.events.is_empty());

    assert!(
        store.finished_traces(&[]).await.expect("empty").is_empty(),
        "an empty batch reads nothing"
    );
}
