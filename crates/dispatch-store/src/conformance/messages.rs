//! What a [`MessageStore`] promises.

use dispatch_core::EventKind;
use serde_json::json;

use super::{id, new_run};
use crate::{NewMessage, Store, StoreError};

fn msg(n: u32, sender: &str, receiver: &str, child: Option<u128>) -> NewMessage {
    NewMessage {
        id: format!("m{n}"),
        sender: sender.into(),
        sender_run: None,
        receiver: receiver.into(),
        kind: "RESULT".into(),
        payload: json!({"n": n, "text": "ünïcode"}),
        created_at: 100 + i64::from(n),
        child_run: child.map(id),
    }
}

pub async fn messages_are_stored_once_by_id_in_order_with_an_event<S: Store>(store: S) {
    let wf = store
        .create_run(&new_run(id(1), "flow", 10))
        .await
        .expect("create");
    let first = [
        msg(1, "__start__", "a", Some(11)),
        msg(2, "a", "b", Some(12)),
    ];
    let stored = store.put_messages(&wf.id, 1, &first).await.expect("put");
    assert_eq!(stored.len(), 2);
    // Again, with one more: the stored ones stay as they were.
    let mut again = msg(2, "a", "c", Some(99));
    again.payload = json!("changed");
    let more = [again, msg(3, "b", "__end__", None)];
    let again = store
        .put_messages(&wf.id, 1, &more)
        .await
        .expect("put again");
    let got = store.list_messages(&wf.id).await.expect("list");
    // Each call returns what it stored, as listed afterwards.
    assert_eq!(stored, got[..2]);
    assert_eq!(again, got[2..], "only the one not stored before");
    let ids: Vec<&str> = got.iter().map(|m| m.message.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        got[1].message,
        msg(2, "a", "b", Some(12)),
        "kept as first stored"
    );
    assert_eq!(got[2].message.child_run, None);
    assert_eq!(got[0].workflow, wf.id);
    // One `message` event per stored message, in the workflow's log.
    let events = store.list_events(&wf.id, 0, 100).await.expect("events");
    let sent: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.event.is(EventKind::Message))
        .map(|e| &e.event.data["id"])
        .collect();
    assert_eq!(sent, [&json!("m1"), &json!("m2"), &json!("m3")]);
    // Another workflow's messages are its own.
    let other = store
        .create_run(&new_run(id(2), "flow", 11))
        .await
        .expect("create");
    assert!(
        store
            .list_messages(&other.id)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn messages_of_a_missing_workflow_are_refused<S: Store>(store: S) {
    let err = store
        .put_messages(&id(7), 1, &[msg(1, "a", "b", None)])
        .await
        .expect_err("no such run");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store.list_messages(&id(7)).await.expect_err("no such run");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}
