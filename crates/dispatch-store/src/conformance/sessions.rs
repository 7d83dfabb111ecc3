//! What a [`SessionStore`] promises.

use serde_json::json;

use crate::{SessionStore, StoreError};

pub async fn a_session_saves_by_compare_and_set_and_never_overwrites_a_newer_turn<
    S: SessionStore,
>(
    store: S,
) {
    assert_eq!(store.get_session("triage/alice").await.expect("get"), None);
    let v1 = store
        .put_session("triage/alice", &json!({"messages": [1]}), 0, None, 10)
        .await
        .expect("first save");
    assert_eq!(v1, 1);
    let err = store
        .put_session("triage/alice", &json!({"messages": []}), 0, None, 11)
        .await
        .expect_err("exists");
    assert!(
        matches!(err, StoreError::SessionConflict { expected: 0, .. }),
        "{err:?}"
    );
    let v2 = store
        .put_session("triage/alice", &json!({"messages": [1, 2]}), 1, None, 12)
        .await
        .expect("second save");
    assert_eq!(v2, 2);
    let err = store
        .put_session("triage/alice", &json!({"messages": ["stale"]}), 1, None, 13)
        .await
        .expect_err("stale");
    assert!(
        matches!(err, StoreError::SessionConflict { expected: 1, .. }),
        "{err:?}"
    );
    let got = store
        .get_session("triage/alice")
        .await
        .expect("get")
        .expect("saved");
    assert_eq!(
        got.data,
        json!({"messages": [1, 2]}),
        "the newer turn was kept"
    );
    assert_eq!((got.version, got.updated_at), (2, 12));
}

pub async fn sessions_list_newest_first_by_prefix_and_delete<S: SessionStore>(store: S) {
    for (key, at) in [("a/one", 10), ("a/two", 30), ("b/one", 20)] {
        store
            .put_session(key, &json!({}), 0, None, at)
            .await
            .expect("save");
    }
    let keys = |v: Vec<crate::SessionRecord>| v.into_iter().map(|s| s.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list_sessions(None).await.expect("list")),
        ["a/two", "b/one", "a/one"]
    );
    assert_eq!(
        keys(store.list_sessions(Some("a/")).await.expect("list")),
        ["a/two", "a/one"]
    );
    assert!(store.delete_session("a/two").await.expect("delete"));
    assert!(!store.delete_session("a/two").await.expect("delete again"));
    assert_eq!(store.get_session("a/two").await.expect("get"), None);
}

pub async fn large_sessions_round_trip_and_bad_keys_are_refused_alike<S: SessionStore>(store: S) {
    let big = json!({"messages": ["x".repeat(1_000_000)], "note": "ünïcode ☃"});
    store
        .put_session("p/big", &big, 0, None, 1)
        .await
        .expect("1 MB saves");
    assert_eq!(
        store
            .get_session("p/big")
            .await
            .expect("get")
            .expect("saved")
            .data,
        big
    );
    for key in ["", "nul\0key", &"k".repeat(600)] {
        let err = store
            .put_session(key, &json!({}), 0, None, 1)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, StoreError::InvalidSession { .. }),
            "{key:?}: {err:?}"
        );
        let err = store.get_session(key).await.expect_err("refused");
        assert!(
            matches!(err, StoreError::InvalidSession { .. }),
            "{key:?}: {err:?}"
        );
    }
}

pub async fn a_session_is_removed_whole_unless_a_live_run_holds_it<S: crate::Store>(store: S) {
    use super::{id, new_run, start, step};
    use dispatch_core::Transition;
    for key in [
        "chat/alice",
        "@file/chat/alice",
        "@memory/chat/alice/city",
        "@checkpoint/chat/alice/plan",
        "chat/bob",
        "@memory/chat/bobby/x",
    ] {
        store
            .put_session(key, &json!({}), 0, None, 10)
            .await
            .expect("save");
    }
    let extras = crate::RunExtras {
        session: Some("chat/alice".into()),
        ..Default::default()
    };
    let holder = store
        .create_run_with(&new_run(id(1), "chat", 20), &extras, false)
        .await
        .expect("create")
        .run()
        .clone();
    assert_eq!(
        store.session_holder("chat/alice").await.expect("holder"),
        Some(holder.id.clone())
    );
    let err = store
        .remove_session("chat/alice")
        .await
        .expect_err("held by a live run");
    assert!(
        matches!(&err, StoreError::SessionBusy { run, .. } if *run == holder.id),
        "{err:?}"
    );
    assert!(
        store
            .get_session("chat/alice")
            .await
            .expect("get")
            .is_some(),
        "nothing was removed"
    );
    let running = start(&store, &holder, 30).await;
    step(&store, &running, Transition::Exited { code: 0, at: 40 }).await;
    assert_eq!(
        store.session_holder("chat/alice").await.expect("holder"),
        None
    );
    assert_eq!(store.remove_session("chat/alice").await.expect("remove"), 4);
    let left: Vec<String> = store
        .list_sessions(None)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(left.len(), 2, "another session's records stay: {left:?}");
    assert_eq!(store.remove_session("chat/alice").await.expect("again"), 0);
}

pub async fn sessions_unused_since_a_time_expire_and_used_ones_stay<S: crate::Store>(store: S) {
    use super::{id, new_run};
    for (key, at) in [
        ("svc/a2a-old", 10),
        ("@file/svc/a2a-old", 12),
        ("svc/a2a-fresh", 100),
        ("@file/svc/a2a-file-only", 5),
        ("svc/a2a-bound", 5),
        ("svc/other", 5),
    ] {
        store
            .put_session(key, &json!({}), 0, None, at)
            .await
            .expect("save");
    }
    // A run bound to it since the cut (live, or not): it was used.
    let extras = crate::RunExtras {
        session: Some("svc/a2a-bound".into()),
        ..Default::default()
    };
    store
        .create_run_with(&new_run(id(1), "svc", 60), &extras, false)
        .await
        .expect("create");
    let gone = store.expire_sessions("svc/a2a-", 50).await.expect("expire");
    assert_eq!(gone, ["svc/a2a-file-only", "svc/a2a-old"]);
    let mut left: Vec<String> = store
        .list_sessions(None)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.key)
        .collect();
    left.sort();
    assert_eq!(left, ["svc/a2a-bound", "svc/a2a-fresh", "svc/other"]);
}
