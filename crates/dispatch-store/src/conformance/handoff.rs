//! What started a run (its trigger), one run per handoff, and finding a
//! handoff's parcel by name.

use dispatch_core::{Transition, Trigger};

use super::{create, id, new_run, start, step};
use crate::{Created, ParcelStore, RunExtras, RunFilter, Store, StoredParcel};

pub async fn a_run_keeps_its_trigger_and_list_filters_by_it<S: Store>(store: S) {
    let manual = create(&store, new_run(id(0x10), "a", 1_000)).await;
    assert_eq!(manual.trigger, Trigger::Manual, "the default");
    let mut up = new_run(id(0x11), "b", 1_001);
    up.trigger = Trigger::Upstream;
    up.origin_id = Some(manual.id.clone());
    let up = create(&store, up).await;
    assert_eq!(up.trigger, Trigger::Upstream);
    assert_eq!(
        store.get_run(&up.id).await.expect("get").trigger,
        Trigger::Upstream
    );
    let mut replay = new_run(id(0x12), "a", 1_002);
    replay.trigger = Trigger::Replay;
    create(&store, replay).await;

    for (trigger, want) in [
        (Trigger::Upstream, vec![id(0x11)]),
        (Trigger::Manual, vec![id(0x10)]),
        (Trigger::Replay, vec![id(0x12)]),
        (Trigger::Workflow, vec![]),
    ] {
        for summary in [false, true] {
            let filter = RunFilter {
                trigger: Some(trigger),
                summary,
                ..RunFilter::default()
            };
            let runs = store.list_runs(&filter).await.expect("list");
            let ids: Vec<_> = runs.iter().map(|r| r.id.clone()).collect();
            assert_eq!(ids, want, "trigger={trigger} summary={summary}");
            assert!(runs.iter().all(|r| r.trigger == trigger));
        }
    }
}

pub async fn a_handoff_key_starts_one_run_per_origin_whatever_became_of_it<S: Store>(store: S) {
    let sender = create(&store, new_run(id(0x20), "sender", 1_000)).await;
    let handoff = |n: u128, origin: u128, key: &str| {
        let mut new = new_run(id(n), "billing", 1_000 + n as i64);
        new.trigger = Trigger::Upstream;
        new.origin_id = Some(id(origin));
        new.handoff_key = Some(key.to_string());
        new
    };
    let extras = RunExtras::default();
    let first = store
        .create_run_with(&handoff(0x21, 0x20, "k1"), &extras, false)
        .await
        .expect("create");
    let Created::New(first) = first else {
        panic!("the first handoff creates its run")
    };
    // The same handoff again, even after its run failed: the same run.
    let running = start(&store, &first, 2_000).await;
    step(
        &store,
        &running,
        Transition::Fail {
            reason: "boom".into(),
            exit_code: Some(1),
            at: 2_001,
        },
    )
    .await;
    for dedupe in [false, true] {
        let again = store
            .create_run_with(&handoff(0x22, 0x20, "k1"), &extras, dedupe)
            .await
            .expect("create again");
        assert!(
            matches!(&again, Created::Existing(r) if r.id == first.id),
            "{again:?}"
        );
    }
    assert!(
        matches!(
            store.get_run(&id(0x22)).await,
            Err(crate::StoreError::NotFound(_))
        ),
        "nothing was inserted"
    );
    // Another key of the same sender, or the same key of another sender: new runs.
    for (n, origin, key) in [(0x23, 0x20, "k2"), (0x24, 0x25, "k1")] {
        let created = store
            .create_run_with(&handoff(n, origin, key), &extras, false)
            .await
            .expect("create");
        assert!(matches!(created, Created::New(_)), "{key} from {origin:x}");
    }
    let upstream = RunFilter {
        trigger: Some(Trigger::Upstream),
        ..RunFilter::default()
    };
    let runs = store.list_runs(&upstream).await.expect("list");
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.origin_id.is_some()));
    assert_eq!(sender.trigger, Trigger::Manual);
}

pub async fn parcels_are_found_by_newest_name_or_digest_prefix<S: ParcelStore>(store: S) {
    let parcel = |digest: char, name: &str, at: i64| StoredParcel {
        digest: digest.to_string().repeat(64),
        name: name.into(),
        manifest: format!(r#"{{"schema":1,"name":"{name}","files":[]}}"#),
        archive: vec![1, 2, 3],
        created_at: at,
    };
    for p in [
        parcel('a', "billing", 1_000),
        parcel('b', "billing", 2_000),
        parcel('c', "other", 1_500),
    ] {
        store.put_parcel(&p).await.expect("put");
    }
    let find = |r: &'static str| {
        let store = &store;
        async move { store.find_parcels(r).await.expect("find") }
    };
    assert_eq!(
        find("billing").await,
        vec!["b".repeat(64)],
        "the newest of the name"
    );
    assert_eq!(find("cccc").await, vec!["c".repeat(64)], "a digest prefix");
    assert_eq!(find("CCCC").await, vec!["c".repeat(64)], "in any case");
    assert!(find("nope").await.is_empty());
    assert!(find("ccc").await.is_empty(), "too short a prefix");
    assert!(find("").await.is_empty());
}

/// A fan-out's members are created in one transaction: all of them (each
/// as `create_run_with` would, a claimed one held by its helper), or, when
/// one cannot be, none.
pub async fn a_batch_creates_every_run_or_none<S: Store>(store: S) {
    let parent = create(&store, new_run(id(0x30), "workflow", 1_000)).await;
    let member = |n: u128| {
        let mut new = new_run(id(n), "member", 1_000 + n as i64);
        new.parent_id = Some(parent.id.clone());
        (new, RunExtras::default())
    };
    let mut batch = vec![member(0x31), member(0x32), member(0x33)];
    batch[1].0.claimed_by = Some(super::HELPER);
    let created = store.create_runs_with(&batch).await.expect("a batch");
    assert_eq!(created.len(), 3);
    assert!(created.iter().all(|c| matches!(c, Created::New(_))));
    let held = store.get_run(&id(0x32)).await.expect("get");
    assert_eq!(held.state.status(), dispatch_core::Status::Starting);
    assert_eq!(held.state.helper(), Some(super::HELPER));
    let queued = store.get_run(&id(0x31)).await.expect("get");
    assert_eq!(queued.state.status(), dispatch_core::Status::Queued);
    let filter = RunFilter {
        parent_id: Some(parent.id.clone()),
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&filter).await.expect("list").len(), 3);

    // 0x33 exists: the batch fails and 0x34, 0x35 are not created.
    let clash = vec![member(0x34), member(0x33), member(0x35)];
    assert!(store.create_runs_with(&clash).await.is_err());
    for n in [0x34, 0x35] {
        assert!(
            store.get_run(&id(n)).await.is_err(),
            "run {n:x} is not created"
        );
    }
    assert_eq!(store.list_runs(&filter).await.expect("list").len(), 3);
    assert!(
        store
            .create_runs_with(&[])
            .await
            .expect("nothing")
            .is_empty()
    );
}
