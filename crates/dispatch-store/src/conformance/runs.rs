//! Creating, reading, resolving, listing, stopping and deleting runs.

use dispatch_core::EventKind;
use dispatch_core::event::Usage;
use dispatch_core::{NewEvent, Operation, RunId, RunState, Status, Transition};
use serde_json::json;

use super::{all_events, create, id, new_run, request, start, step};
use crate::{Artifact, QueueOptions, QueueStore, RunFilter, Store, StoreError};

pub async fn create_then_get_round_trips<S: Store>(store: S) {
    let mut new = new_run(id(0x0192_0000_0001), "summarize", 1_700_000_000_123);
    new.operation = Operation::Heartbeat;
    new.parent_id = Some(id(0x0191));
    new.origin_id = Some(id(0x0190));
    new.payload = json!({"text": "héllo ✓", "nested": {"list": [1, 2.5, null, true]}});

    let created = create(&store, new.clone()).await;
    let got = store
        .get_run(&new.id)
        .await
        .expect("a created run can be read");
    assert_eq!(created, got, "create returns what get reads");

    assert_eq!(got.id, new.id);
    assert_eq!(got.version, 1, "a new run starts at version 1");
    assert_eq!(got.attempt, 1, "a new run is on its first attempt");
    assert_eq!(got.state, RunState::queued());
    assert_eq!(got.status(), Status::Queued);
    assert_eq!(got.parcel_digest, new.parcel_digest);
    assert_eq!(got.parcel_name, "summarize");
    assert_eq!(got.operation, Operation::Heartbeat);
    assert_eq!(got.parent_id, new.parent_id);
    assert_eq!(got.origin_id, new.origin_id);
    assert_eq!(got.payload, new.payload);
    assert_eq!(got.brief_sha256, new.brief_sha256);
    assert_eq!(got.created_at, 1_700_000_000_123);
    assert_eq!(got.updated_at, got.created_at);
    assert_eq!(got.stop_requested_at, None);
    assert_eq!(got.usage, Usage::default());
    assert_eq!(got.output, None);

    let events = all_events(&store, &new.id).await;
    assert_eq!(events.len(), 1, "creation records exactly one event");
    let created_event = &events[0].event;
    assert_eq!(created_event.kind, "created");
    assert_eq!(created_event.attempt, 1);
    assert_eq!(created_event.at, new.created_at);
    assert_eq!(created_event.data["operation"], "heartbeat");
    assert_eq!(created_event.data["parcel"], "summarize");
    assert_eq!(created_event.data["parent_id"], json!(id(0x0191)));

    let attempts = store.list_attempts(&new.id).await.expect("attempts list");
    assert!(attempts.is_empty(), "a queued run has no attempt yet");
}

pub async fn creating_a_duplicate_id_conflicts_and_keeps_the_first<S: Store>(store: S) {
    let first = create(&store, new_run(id(7), "first", 10)).await;
    let err = store
        .create_run(&new_run(id(7), "second", 20))
        .await
        .expect_err("a second run with the same id is refused");
    assert!(
        matches!(&err, StoreError::Conflict { id: got, .. } if *got == id(7)),
        "duplicate id gives Conflict, got {err:?}"
    );
    let kept = store
        .get_run(&id(7))
        .await
        .expect("the first run is still there");
    assert_eq!(kept, first);
    assert_eq!(all_events(&store, &id(7)).await.len(), 1);
}

pub async fn an_unknown_run_is_not_found_everywhere<S: Store>(store: S) {
    let ghost = id(0xdead);
    let is_not_found = |what: &str, r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::NotFound(ref s)) if *s == ghost.to_string()),
            "{what} of an unknown run is NotFound naming it, got {r:?}"
        );
    };
    is_not_found("get", store.get_run(&ghost).await.map(drop));
    let write = super::write_for(
        &create(&store, new_run(id(1), "other", 1)).await,
        &Transition::Claim {
            helper: super::HELPER,
            at: 2,
        },
    );
    is_not_found(
        "transition",
        store.transition(&ghost, 1, &write).await.map(drop),
    );
    is_not_found(
        "request_stop",
        store.request_stop(&ghost, 5).await.map(drop),
    );
    is_not_found("delete", store.delete_run(&ghost).await);
    let usage = NewEvent::new(EventKind::Usage, 1, 5, json!({"input_tokens": 1}));
    is_not_found("append_events", store.append_events(&ghost, &[usage]).await);
    is_not_found(
        "list_events",
        store.list_events(&ghost, 0, 10).await.map(drop),
    );
    is_not_found("list_attempts", store.list_attempts(&ghost).await.map(drop));
    let artifact = Artifact {
        name: "a.txt".into(),
        sha256: "0".repeat(64),
        size: 1,
    };
    is_not_found(
        "add_artifacts",
        store.add_artifacts(&ghost, &[artifact]).await,
    );
    is_not_found(
        "list_artifacts",
        store.list_artifacts(&ghost).await.map(drop),
    );
}

pub async fn a_unique_prefix_resolves_to_its_run<S: Store>(store: S) {
    let a = id(0xabc1 << 112);
    let b = id(0xabd2 << 112);
    create(&store, new_run(a.clone(), "p", 1)).await;
    create(&store, new_run(b.clone(), "p", 2)).await;
    for (prefix, want) in [("abc", &a), ("abd", &b), ("ABD2", &b)] {
        let got = store
            .resolve_prefix(&prefix.to_ascii_lowercase())
            .await
            .expect("a unique prefix resolves");
        assert_eq!(&got, want, "prefix {prefix}");
    }
    let whole = store
        .resolve_prefix(a.as_str())
        .await
        .expect("a whole id resolves to itself");
    assert_eq!(whole, a);
}

pub async fn an_ambiguous_prefix_is_refused_with_count_and_examples<S: Store>(store: S) {
    for n in 1..=5u128 {
        create(&store, new_run(id((0xfeed << 112) | n), "p", n as i64)).await;
    }
    create(&store, new_run(id(0xfeee << 112), "p", 9)).await;
    let err = store
        .resolve_prefix("feed")
        .await
        .expect_err("five runs share the prefix");
    let StoreError::Ambiguous {
        prefix,
        count,
        examples,
    } = &err
    else {
        panic!("expected Ambiguous, got {err:?}");
    };
    assert_eq!(prefix, "feed");
    assert_eq!(*count, 5, "the count is exact, not the example limit");
    let shown: Vec<&str> = examples.split(", ").collect();
    assert!(
        shown.len() >= 2 && shown.len() <= 5,
        "a few examples: {examples}"
    );
    assert!(
        shown.iter().all(|s| s.starts_with("feed")),
        "examples are ids with the prefix: {examples}"
    );
    let mut distinct = shown.clone();
    distinct.dedup();
    assert_eq!(distinct, shown, "examples tell the runs apart: {examples}");
    let msg = err.to_string();
    assert!(msg.contains("5 runs"), "the message gives the count: {msg}");
}

pub async fn an_unknown_prefix_is_not_found<S: Store>(store: S) {
    create(&store, new_run(id(0x1234 << 112), "p", 1)).await;
    for prefix in ["9", "12345", "1233"] {
        let err = store
            .resolve_prefix(prefix)
            .await
            .expect_err("no run has this prefix");
        assert!(
            matches!(&err, StoreError::NotFound(p) if p == prefix),
            "NotFound naming the prefix {prefix}, got {err:?}"
        );
    }
}

/// Four runs: two jobs of `alpha` (one finished), a heartbeat of `beta` whose
/// parent is the first, and a service of `gamma`. Ids ascend with creation.
async fn fixture<S: Store>(store: &S) {
    let mut runs = vec![
        new_run(id(0x10), "alpha", 100),
        new_run(id(0x20), "alpha", 200),
        new_run(id(0x30), "beta", 300),
        new_run(id(0x40), "gamma", 400),
    ];
    runs[2].operation = Operation::Heartbeat;
    runs[2].parent_id = Some(id(0x10));
    runs[3].operation = Operation::Service;
    for new in runs {
        create(store, new).await;
    }
    let second = store.get_run(&id(0x20)).await.expect("fixture run exists");
    let running = start(store, &second, 500).await;
    step(store, &running, Transition::Exited { code: 0, at: 510 }).await;
}

fn ids(runs: &[crate::Run]) -> Vec<dispatch_core::RunId> {
    runs.iter().map(|r| r.id.clone()).collect()
}

async fn list<S: Store>(store: &S, filter: RunFilter) -> Vec<dispatch_core::RunId> {
    ids(&store.list_runs(&filter).await.expect("listing runs works"))
}

pub async fn list_is_newest_first<S: Store>(store: S) {
    fixture(&store).await;
    let all = list(&store, RunFilter::default()).await;
    assert_eq!(all, vec![id(0x40), id(0x30), id(0x20), id(0x10)]);
    let runs = store
        .list_runs(&RunFilter::default())
        .await
        .expect("listing runs works");
    assert_eq!(
        runs[2].status(),
        Status::Succeeded,
        "rows carry their state"
    );
}

/// A summary listing (`dispatch ps`) has the same runs, in the same order,
/// with everything a table shows, under every filter.
pub async fn a_summary_listing_shows_what_the_full_one_does<S: Store>(store: S) {
    fixture(&store).await;
    for filter in [
        RunFilter::default(),
        RunFilter {
            statuses: vec![Status::Queued],
            ..RunFilter::default()
        },
        RunFilter {
            parcel: Some("alpha".into()),
            limit: Some(1),
            ..RunFilter::default()
        },
    ] {
        let full = store.list_runs(&filter).await.expect("list");
        let summary = RunFilter {
            summary: true,
            ..filter.clone()
        };
        let short = store.list_runs(&summary).await.expect("list a summary");
        assert!(!full.is_empty(), "{filter:?} lists runs");
        assert_eq!(ids(&short), ids(&full), "{filter:?}");
        for (s, f) in short.iter().zip(&full) {
            assert_eq!(
                (&s.parcel_name, s.operation, &s.state, s.created_at, s.usage),
                (&f.parcel_name, f.operation, &f.state, f.created_at, f.usage),
                "{filter:?}"
            );
            assert_eq!(
                (&s.parcel_digest, &s.parent_id, s.version, s.attempt),
                (&f.parcel_digest, &f.parent_id, f.version, f.attempt),
                "what reconciling a live run needs is there"
            );
        }
    }
}

pub async fn list_filters_by_status<S: Store>(store: S) {
    fixture(&store).await;
    let only = |statuses: Vec<Status>| RunFilter {
        statuses,
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, only(vec![Status::Queued])).await,
        vec![id(0x40), id(0x30), id(0x10)]
    );
    assert_eq!(
        list(&store, only(vec![Status::Succeeded])).await,
        vec![id(0x20)]
    );
    assert_eq!(
        list(&store, only(vec![Status::Running, Status::Succeeded])).await,
        vec![id(0x20)]
    );
    assert!(list(&store, only(vec![Status::Failed])).await.is_empty());
}

pub async fn list_filters_by_parcel_name_or_digest_prefix<S: Store>(store: S) {
    fixture(&store).await;
    let parcel = |p: &str| RunFilter {
        parcel: Some(p.to_string()),
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, parcel("alpha")).await,
        vec![id(0x20), id(0x10)]
    );
    let beta_digest = super::digest_of("beta");
    assert_eq!(
        list(&store, parcel(&beta_digest[..10])).await,
        vec![id(0x30)],
        "a digest prefix selects the parcel's runs"
    );
    assert_eq!(list(&store, parcel(&beta_digest)).await, vec![id(0x30)]);
    assert!(
        list(&store, parcel("alph")).await.is_empty(),
        "names match whole"
    );
    assert!(list(&store, parcel("delta")).await.is_empty());
}

pub async fn list_filters_by_operation_and_parent<S: Store>(store: S) {
    fixture(&store).await;
    let op = |o: Operation| RunFilter {
        operation: Some(o),
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, op(Operation::Job)).await,
        vec![id(0x20), id(0x10)]
    );
    assert_eq!(list(&store, op(Operation::Service)).await, vec![id(0x40)]);
    let children = RunFilter {
        parent_id: Some(id(0x10)),
        ..RunFilter::default()
    };
    assert_eq!(list(&store, children).await, vec![id(0x30)]);
    let combined = RunFilter {
        statuses: vec![Status::Queued],
        parcel: Some("alpha".into()),
        operation: Some(Operation::Job),
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, combined).await,
        vec![id(0x10)],
        "filters combine with AND"
    );
}

pub async fn list_filters_by_creation_time<S: Store>(store: S) {
    fixture(&store).await;
    let window = |after: Option<i64>, before: Option<i64>| RunFilter {
        created_after: after,
        created_before: before,
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, window(Some(200), None)).await,
        vec![id(0x40), id(0x30), id(0x20)],
        "created_after is inclusive"
    );
    assert_eq!(
        list(&store, window(None, Some(300))).await,
        vec![id(0x20), id(0x10)],
        "created_before is exclusive"
    );
    assert_eq!(
        list(&store, window(Some(200), Some(400))).await,
        vec![id(0x30), id(0x20)]
    );
    assert!(list(&store, window(Some(201), Some(300))).await.is_empty());
    assert!(
        list(&store, window(Some(300), Some(300))).await.is_empty(),
        "an empty window"
    );
    assert_eq!(
        list(&store, window(Some(500), None)).await,
        Vec::<RunId>::new(),
        "a state change later is not a creation"
    );
    let combined = RunFilter {
        statuses: vec![Status::Queued],
        created_after: Some(100),
        before: Some(id(0x40)),
        limit: Some(1),
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, combined).await,
        vec![id(0x30)],
        "times combine with the other filters and the cursor"
    );
}

/// Lists by labels, and checks every way of reading a run gives its labels:
/// the enqueue's answer, get, list, a claim and a transition.
pub async fn list_filters_by_labels_and_runs_carry_theirs<S: Store + QueueStore>(store: S) {
    let dispatched: [(u128, &[&str]); 4] =
        [(1, &[]), (2, &["gpu"]), (3, &["gpu", "eu"]), (4, &["eu"])];
    let strings =
        |labels: &[&str]| -> Vec<String> { labels.iter().map(|l| l.to_string()).collect() };
    for (n, labels) in dispatched {
        let options = QueueOptions {
            labels: strings(labels),
            ..QueueOptions::default()
        };
        let run = store
            .enqueue(&new_run(id(n), "p", n as i64 * 100), &options)
            .await
            .expect("enqueue");
        assert_eq!(run.labels, strings(labels), "enqueue answers the labels");
    }
    let with = |labels: &[&str]| RunFilter {
        labels: strings(labels),
        ..RunFilter::default()
    };
    assert_eq!(list(&store, with(&["gpu"])).await, vec![id(3), id(2)]);
    assert_eq!(
        list(&store, with(&["gpu", "eu"])).await,
        vec![id(3)],
        "every label is needed"
    );
    assert_eq!(list(&store, with(&["eu", "gpu"])).await, vec![id(3)]);
    assert!(list(&store, with(&["tpu"])).await.is_empty());
    assert!(list(&store, with(&["gpu", "tpu"])).await.is_empty());
    assert_eq!(
        list(&store, with(&[])).await.len(),
        4,
        "no labels: all runs"
    );
    let combined = RunFilter {
        labels: strings(&["eu"]),
        created_before: Some(400),
        ..RunFilter::default()
    };
    assert_eq!(list(&store, combined).await, vec![id(3)]);

    let listed = store.list_runs(&RunFilter::default()).await.expect("list");
    for (n, labels) in dispatched {
        let run = store.get_run(&id(n)).await.expect("get");
        assert_eq!(run.labels, strings(labels), "get gives the labels");
        let row = listed.iter().find(|r| r.id == id(n)).expect("listed");
        assert_eq!(row.labels, strings(labels), "list gives the labels");
    }
    let mut both = request("w", 10, 1000);
    both.labels = strings(&["eu", "gpu"]);
    let claimed = store.claim(&both).await.expect("claim");
    assert_eq!(claimed.len(), 4);
    for c in &claimed {
        let stored = store.get_run(&c.run.id).await.expect("get");
        assert_eq!(c.run.labels, stored.labels, "a claim gives the labels");
    }
    let held = claimed
        .iter()
        .find(|c| c.run.id == id(3))
        .expect("run 3 claimed");
    let running = super::queue::agent_up(&store, held, 1001).await;
    assert_eq!(
        running.labels,
        strings(&["gpu", "eu"]),
        "a transition keeps them"
    );
}

pub async fn list_honours_the_limit_after_filtering<S: Store>(store: S) {
    fixture(&store).await;
    let limited = |limit: usize, statuses: Vec<Status>| RunFilter {
        statuses,
        limit: Some(limit),
        ..RunFilter::default()
    };
    assert_eq!(
        list(&store, limited(2, vec![])).await,
        vec![id(0x40), id(0x30)]
    );
    assert_eq!(
        list(&store, limited(2, vec![Status::Succeeded, Status::Queued])).await,
        vec![id(0x40), id(0x30)]
    );
    assert_eq!(
        list(&store, limited(1, vec![Status::Succeeded])).await,
        vec![id(0x20)]
    );
    assert!(list(&store, limited(0, vec![])).await.is_empty());
}

pub async fn request_stop_is_idempotent_and_keeps_the_first_time<S: Store>(store: S) {
    let run = create(&store, new_run(id(1), "p", 10)).await;
    let run = start(&store, &run, 20).await;
    let first = store
        .request_stop(&run.id, 100)
        .await
        .expect("stopping a live run is recorded");
    assert_eq!(first.stop_requested_at, Some(100));
    assert_eq!(
        first.version, run.version,
        "a stop request is not a state change"
    );
    assert_eq!(first.state, run.state);
    let again = store
        .request_stop(&run.id, 200)
        .await
        .expect("asking again is fine");
    assert_eq!(
        again.stop_requested_at,
        Some(100),
        "the first request's time is kept"
    );
    assert_eq!(again, first, "a repeated request changes nothing");
    let stops: Vec<_> = all_events(&store, &run.id)
        .await
        .into_iter()
        .filter(|e| e.event.is(EventKind::StopRequested))
        .collect();
    assert_eq!(stops.len(), 1, "only the first request is logged");
    assert_eq!(stops[0].event.at, 100);
    // The owner's next state write is not disturbed by the request.
    step(
        &store,
        &again,
        Transition::Cancel {
            reason: "stopped by user".into(),
            exit_code: Some(143),
            at: 110,
        },
    )
    .await;
}

pub async fn delete_refuses_a_live_run<S: Store>(store: S) {
    let queued = create(&store, new_run(id(1), "p", 10)).await;
    let running = start(&store, &create(&store, new_run(id(2), "p", 10)).await, 20).await;
    for run in [&queued, &running] {
        let err = store
            .delete_run(&run.id)
            .await
            .expect_err("a live run cannot be deleted");
        assert!(
            matches!(&err, StoreError::InvalidState { id: got, status, .. }
                if *got == run.id && *status == run.status()),
            "InvalidState naming the run and its status, got {err:?}"
        );
        assert!(err.to_string().contains("stop it first"), "hint: {err}");
        let kept = store
            .get_run(&run.id)
            .await
            .expect("the run is still there");
        assert_eq!(&kept, run);
        assert!(!all_events(&store, &run.id).await.is_empty());
    }
}

pub async fn delete_removes_a_terminal_run_and_everything_it_owns<S: Store>(store: S) {
    let neighbour = create(&store, new_run(id(9), "p", 5)).await;
    let run = start(&store, &create(&store, new_run(id(1), "p", 10)).await, 20).await;
    let usage = NewEvent::new(EventKind::Usage, 1, 25, json!({"input_tokens": 3}));
    store
        .append_events(&run.id, std::slice::from_ref(&usage))
        .await
        .expect("append");
    store
        .append_events(&neighbour.id, &[usage])
        .await
        .expect("append");
    let artifact = Artifact {
        name: "report.md".into(),
        sha256: "a".repeat(64),
        size: 12,
    };
    store
        .add_artifacts(&run.id, std::slice::from_ref(&artifact))
        .await
        .expect("add artifacts");
    store
        .add_artifacts(&neighbour.id, &[artifact])
        .await
        .expect("add artifacts");
    step(&store, &run, Transition::Exited { code: 1, at: 30 }).await;

    store
        .delete_run(&run.id)
        .await
        .expect("a finished run can be deleted");
    assert!(matches!(
        store.get_run(&run.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.list_events(&run.id, 0, 100).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.list_attempts(&run.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.list_artifacts(&run.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store
            .list_runs(&RunFilter::default())
            .await
            .expect("list")
            .len()
            == 1,
        "only the neighbour is left"
    );
    // A run with the same id could be created again from scratch.
    let reborn = create(&store, new_run(id(1), "p", 40)).await;
    assert_eq!(all_events(&store, &reborn.id).await.len(), 1);
    assert!(
        store
            .list_attempts(&reborn.id)
            .await
            .expect("attempts")
            .is_empty()
    );
    assert!(
        store
            .list_artifacts(&reborn.id)
            .await
            .expect("artifacts")
            .is_empty()
    );
    // The neighbour kept all of its records.
    assert_eq!(all_events(&store, &neighbour.id).await.len(), 2);
    assert_eq!(
        store
            .list_artifacts(&neighbour.id)
            .await
            .expect("artifacts")
            .len(),
        1
    );
    let neighbour_now = store.get_run(&neighbour.id).await.expect("neighbour");
    assert_eq!(neighbour_now.usage.input_tokens, 3);
}

pub async fn list_pages_with_a_cursor<S: Store>(store: S) {
    for n in 1..=5 {
        create(&store, new_run(id(n), "p", n as i64)).await;
    }
    create(&store, new_run(id(6), "other", 6)).await;
    let page = |before: Option<RunId>| RunFilter {
        parcel: Some("p".into()),
        before,
        limit: Some(2),
        ..RunFilter::default()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let runs = store.list_runs(&page(cursor.clone())).await.expect("list");
        let Some(last) = runs.last() else { break };
        cursor = Some(last.id.clone());
        seen.extend(runs.into_iter().map(|r| r.id));
    }
    assert_eq!(
        seen,
        vec![id(5), id(4), id(3), id(2), id(1)],
        "pages follow each other newest first, none missed or repeated"
    );
}
