//! What a [`UsageStore`] promises: the cost report's sums.

use dispatch_core::{NewEvent, RunEvent};
use serde_json::{Value, json};

use super::{id, new_run};
use crate::{
    NO_LABEL, QueueOptions, QueueStore, Store, UNKNOWN_MODEL, UsageBy, UsageQuery, UsageRow,
    UsageStore,
};

/// 2026-11-20T00:00:00Z, in ms.
const DAY: i64 = 1_795_132_800_000;
const MS_PER_DAY: i64 = 24 * 3600 * 1000;

fn usage(data: Value, at: i64) -> NewEvent {
    NewEvent::of(RunEvent::Usage(data), 1, at)
}

fn row(key: &str, runs: u64, calls: u64, tokens: (u64, u64), cost: f64) -> UsageRow {
    UsageRow {
        key: key.to_string(),
        runs,
        calls,
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        cost_usd: cost,
        ..UsageRow::default()
    }
}

/// Rows with the estimated and unpriced counts left out (checked apart).
fn sums(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    rows.into_iter()
        .map(|r| UsageRow {
            estimated_calls: 0,
            unpriced_calls: 0,
            cost_usd: (r.cost_usd * 1e6).round() / 1e6,
            ..r
        })
        .collect()
}

pub async fn usage_sums_billed_calls_by_parcel_model_label_and_day<
    S: Store + QueueStore + UsageStore,
>(
    store: S,
) {
    let runs: [(u128, &str, &[&str]); 3] = [
        (1, "triage", &["team-a"]),
        (2, "triage", &["team-a", "eu"]),
        (3, "review", &[]),
    ];
    for (n, parcel, labels) in runs {
        let options = QueueOptions {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            ..QueueOptions::default()
        };
        store
            .enqueue(&new_run(id(n), parcel, DAY), &options)
            .await
            .expect("enqueue");
    }
    let day2 = DAY + MS_PER_DAY + 5;
    let events: [(u128, Vec<NewEvent>); 3] = [
        (
            1,
            vec![
                usage(
                    json!({"model": "gpt-x", "input_tokens": 100, "output_tokens": 10, "cost_usd": 0.5}),
                    DAY + 1,
                ),
                usage(
                    json!({"model": "claude-y", "input_tokens": 200, "output_tokens": 20, "cost_usd": 1.0}),
                    day2,
                ),
            ],
        ),
        (
            2,
            vec![usage(
                json!({"model": "gpt-x", "input_tokens": 50, "output_tokens": 5, "cost_usd": 0.25, "estimated": true}),
                DAY + 2,
            )],
        ),
        // An agent's own report: no model, no price.
        (
            3,
            vec![usage(
                json!({"input_tokens": 7, "output_tokens": 3}),
                day2 + 1,
            )],
        ),
    ];
    for (n, list) in events {
        store.append_events(&id(n), &list).await.expect("append");
    }
    // Not a bill: ignored.
    store
        .append_events(
            &id(1),
            &[NewEvent::of(
                RunEvent::ModelCall(json!({"model": "gpt-x", "input_tokens": 999})),
                1,
                DAY + 3,
            )],
        )
        .await
        .expect("append a model call");

    let report = |by: UsageBy, since: Option<i64>, until: Option<i64>| {
        let store = &store;
        async move {
            store
                .usage(&UsageQuery {
                    by,
                    since,
                    until,
                    projects: Vec::new(),
                })
                .await
                .expect("usage")
        }
    };
    let by_parcel = report(UsageBy::Parcel, None, None).await;
    assert_eq!(
        sums(by_parcel.clone()),
        vec![
            row("triage", 2, 3, (350, 35), 1.75),
            row("review", 1, 1, (7, 3), 0.0)
        ],
        "most costly first"
    );
    assert_eq!(by_parcel[0].estimated_calls, 1);
    assert_eq!(by_parcel[0].unpriced_calls, 0);
    assert_eq!(by_parcel[1].unpriced_calls, 1, "a bill without a price");

    assert_eq!(
        sums(report(UsageBy::Model, None, None).await),
        vec![
            row("claude-y", 1, 1, (200, 20), 1.0),
            row("gpt-x", 2, 2, (150, 15), 0.75),
            row(UNKNOWN_MODEL, 1, 1, (7, 3), 0.0),
        ]
    );
    assert_eq!(
        sums(report(UsageBy::Label, None, None).await),
        vec![
            row("team-a", 2, 3, (350, 35), 1.75),
            row("eu", 1, 1, (50, 5), 0.25),
            row(NO_LABEL, 1, 1, (7, 3), 0.0),
        ],
        "a run counts under each of its labels"
    );
    assert_eq!(
        sums(report(UsageBy::Day, None, None).await),
        vec![
            row("2026-11-21", 2, 2, (207, 23), 1.0),
            row("2026-11-20", 2, 2, (150, 15), 0.75),
        ]
    );
    assert_eq!(
        sums(report(UsageBy::Parcel, Some(DAY + MS_PER_DAY), None).await),
        vec![
            row("triage", 1, 1, (200, 20), 1.0),
            row("review", 1, 1, (7, 3), 0.0)
        ],
        "since: what was billed from then on"
    );
    assert_eq!(
        sums(report(UsageBy::Parcel, None, Some(DAY + 2)).await),
        vec![row("triage", 1, 1, (100, 10), 0.5)],
        "until is exclusive"
    );
    assert!(
        report(UsageBy::Model, Some(day2 + 10), None)
            .await
            .is_empty(),
        "nothing billed in the period"
    );
}
