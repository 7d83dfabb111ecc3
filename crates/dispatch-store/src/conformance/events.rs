//! The event log, usage totals and artifacts.

use dispatch_core::EventKind;
use dispatch_core::event::Usage;
use dispatch_core::{NewEvent, Transition};
use serde_json::json;

use super::{all_events, create, id, new_run, start, step};
use crate::{Artifact, Store};

pub async fn usage_events_sum_into_totals_without_bumping_the_version<S: Store>(store: S) {
    let run = start(&store, &create(&store, new_run(id(1), "p", 10)).await, 20).await;
    let usage = |input: u64, output: u64, cost: f64| {
        NewEvent::new(
            EventKind::Usage,
            1,
            30,
            json!({"model": "m", "input_tokens": input, "output_tokens": output, "cost_usd": cost}),
        )
    };
    store
        .append_events(
            &run.id,
            &[
                usage(1200, 300, 0.5),
                NewEvent::new(
                    EventKind::Step,
                    1,
                    31,
                    json!({"name": "plan", "input_tokens": 999}),
                ),
                usage(800, 200, 0.25),
            ],
        )
        .await
        .expect("append a batch");
    store
        .append_events(&run.id, &[usage(1, 2, 0.125)])
        .await
        .expect("append one");
    let now = store.get_run(&run.id).await.expect("get");
    assert_eq!(
        now.usage,
        Usage {
            input_tokens: 2001,
            output_tokens: 502,
            cost_usd: 0.875,
        },
        "only usage events count, and every one of them"
    );
    assert_eq!(now.version, run.version, "usage is not a state change");
    assert_eq!(now.state, run.state);
    // So the owner's compare-and-set still holds after usage arrived.
    let done = step(&store, &now, Transition::Exited { code: 0, at: 40 }).await;
    assert_eq!(done.usage, now.usage, "totals survive the transition");
}

pub async fn events_page_by_after_and_limit<S: Store>(store: S) {
    let run = create(&store, new_run(id(1), "p", 10)).await;
    let other = create(&store, new_run(id(2), "p", 10)).await;
    for n in 0..10 {
        let event = NewEvent::new(EventKind::Log, 1, 100 + n, json!({"n": n}));
        store
            .append_events(&run.id, std::slice::from_ref(&event))
            .await
            .expect("append");
        store
            .append_events(&other.id, &[event])
            .await
            .expect("append");
    }
    let all = all_events(&store, &run.id).await;
    assert_eq!(all.len(), 11, "created + 10 logs, none of the other run's");
    assert!(all.iter().all(|e| e.run_id == run.id));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");

    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_events(&run.id, after, 4)
            .await
            .expect("a page of events");
        assert!(page.len() <= 4, "a page holds at most `limit` events");
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all, "paging by seq sees every event once, in order");

    let tail = store
        .list_events(&run.id, all[8].seq, 100)
        .await
        .expect("the tail");
    assert_eq!(tail, all[9..].to_vec());
    let none = store
        .list_events(&run.id, all[10].seq, 100)
        .await
        .expect("nothing new");
    assert!(
        none.is_empty(),
        "a caught-up reader gets nothing, not an error"
    );
    let data: Vec<i64> = all[1..]
        .iter()
        .map(|e| e.event.data["n"].as_i64().expect("n is stored"))
        .collect();
    assert_eq!(data, (0..10).collect::<Vec<_>>());

    // The newest event of some kinds, of this run only.
    let marks = [
        NewEvent::new("mark", 1, 200, json!({"n": 1})),
        NewEvent::new(EventKind::Log, 1, 201, json!({"n": 2})),
        NewEvent::new("mark", 1, 202, json!({"n": 3})),
        NewEvent::new("other", 1, 203, json!({"n": 4})),
    ];
    store.append_events(&run.id, &marks).await.expect("append");
    let latest = store
        .latest_event(&run.id, &["mark", "nothing"])
        .await
        .expect("latest")
        .expect("a mark");
    assert_eq!(
        (latest.event.kind.as_str(), &latest.event.data),
        ("mark", &json!({"n": 3}))
    );
    let either = store
        .latest_event(&run.id, &["mark", "other"])
        .await
        .expect("latest")
        .expect("one of them");
    assert_eq!(either.event.kind, "other");
    assert!(
        store
            .latest_event(&other.id, &["mark"])
            .await
            .expect("latest")
            .is_none(),
        "another run's events are not this one's"
    );
}

pub async fn artifacts_round_trip_and_a_name_recorded_again_is_replaced<S: Store>(store: S) {
    let run = create(&store, new_run(id(1), "p", 10)).await;
    let other = create(&store, new_run(id(2), "p", 10)).await;
    assert!(
        store
            .list_artifacts(&run.id)
            .await
            .expect("list")
            .is_empty()
    );
    let report = Artifact {
        name: "out/report.md".into(),
        sha256: "1".repeat(64),
        size: 1234,
    };
    let chart = Artifact {
        name: "chart.png".into(),
        sha256: "2".repeat(64),
        size: u64::from(u32::MAX) + 7,
    };
    store
        .add_artifacts(&run.id, &[report.clone(), chart.clone()])
        .await
        .expect("add");
    assert_eq!(
        store.list_artifacts(&run.id).await.expect("list"),
        vec![chart.clone(), report.clone()],
        "artifacts list by name"
    );
    assert!(
        store
            .list_artifacts(&other.id)
            .await
            .expect("list")
            .is_empty(),
        "artifacts belong to their run"
    );
    let newer = Artifact {
        sha256: "3".repeat(64),
        size: 99,
        ..report
    };
    store
        .add_artifacts(&run.id, std::slice::from_ref(&newer))
        .await
        .expect("record again");
    assert_eq!(
        store.list_artifacts(&run.id).await.expect("list"),
        vec![chart, newer]
    );
}
