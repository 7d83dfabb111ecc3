//! What runs spent, summed by a key: the cost report of `dispatch usage` and
//! `GET /v1/usage`. Read from the runs' `usage` events (the record each
//! model call bills, estimated ones included), so a report over a period
//! counts what was spent in it, also by runs created before it.

use async_trait::async_trait;
use dispatch_core::Ts;
use serde::{Deserialize, Serialize};

use crate::StoreResult;

/// What the rows of a report are keyed by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageBy {
    /// The run's parcel name.
    #[default]
    Parcel,
    /// The model a call billed (`(unknown)` when an agent did not say).
    Model,
    /// Each of the run's labels (a run with two labels counts under both;
    /// one with none under `(none)`).
    Label,
    /// The UTC day the call was billed on (`YYYY-MM-DD`).
    Day,
    /// The run's project.
    Project,
}

impl UsageBy {
    pub const ALL: [UsageBy; 5] = [
        UsageBy::Parcel,
        UsageBy::Model,
        UsageBy::Label,
        UsageBy::Day,
        UsageBy::Project,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageBy::Parcel => "parcel",
            UsageBy::Model => "model",
            UsageBy::Label => "label",
            UsageBy::Day => "day",
            UsageBy::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Option<UsageBy> {
        UsageBy::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl std::fmt::Display for UsageBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key a model-less `usage` event is reported under.
pub const UNKNOWN_MODEL: &str = "(unknown)";
/// The key a run without labels is reported under, by label.
pub const NO_LABEL: &str = "(none)";

/// A report's period and grouping: `usage` events billed at `since` or
/// later and before `until`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageQuery {
    pub by: UsageBy,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
    /// Only runs of these projects; empty means all.
    pub projects: Vec<String>,
}

/// One key's spend over the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub key: String,
    /// Runs with at least one billed call.
    pub runs: u64,
    /// Billed calls (`usage` events).
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Calls whose bill is an estimate (a stream cut or stopped, a call lost
    /// with its attempt).
    pub estimated_calls: u64,
    /// Calls with no price (a model without one): their cost is not in
    /// `cost_usd`.
    pub unpriced_calls: u64,
}

/// The cost report's read.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// One row per key with spend in the period, the most costly first (then
    /// the most tokens, then by key).
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>>;
}

/// The order of a report: cost, then tokens, descending; then the key.
pub fn sort_rows(rows: &mut [UsageRow]) {
    rows.sort_by(|a, b| {
        b.cost_usd
            .total_cmp(&a.cost_usd)
            .then((b.input_tokens + b.output_tokens).cmp(&(a.input_tokens + a.output_tokens)))
            .then(a.key.cmp(&b.key))
    });
}

/// A report: its rows and the period's total.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub rows: Vec<UsageRow>,
    /// The sums over every billed call of the period, each run counted
    /// once (by label, a run may be in several rows).
    pub total: UsageRow,
}

/// The report for `query`, with its total. By label or day a run can sit
/// in several rows, so the total is summed from the rows by parcel (one
/// parcel per run), read once more.
pub async fn report<S: UsageStore + ?Sized>(
    store: &S,
    query: &UsageQuery,
) -> StoreResult<UsageReport> {
    let rows = store.usage(query).await?;
    let by_parcel = match query.by {
        UsageBy::Parcel => rows.clone(),
        _ => {
            let q = UsageQuery {
                by: UsageBy::Parcel,
                ..query.clone()
            };
            store.usage(&q).await?
        }
    };
    let mut total = UsageRow {
        key: "total".to_string(),
        ..UsageRow::default()
    };
    for r in &by_parcel {
        total.runs += r.runs;
        total.calls += r.calls;
        total.input_tokens += r.input_tokens;
        total.output_tokens += r.output_tokens;
        total.cost_usd += r.cost_usd;
        total.estimated_calls += r.estimated_calls;
        total.unpriced_calls += r.unpriced_calls;
    }
    Ok(UsageReport { rows, total })
}
