//! The answers of the operations routes: the cost report, quotas, sessions
//! and the notification outbox. Like every answer the server builds as a
//! type, each keeps its fields in name order (the order these answers had
//! when they were JSON maps), and a field that has no value is `null`,
//! never absent.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What one key spent in the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// Calls billed (`usage` events).
    pub calls: u64,
    /// Priced calls only (see `unpriced_calls`).
    pub cost_usd: f64,
    /// Calls billed on an estimate (a stream cut or stopped, a call lost
    /// with its attempt).
    pub estimated_calls: u64,
    pub input_tokens: u64,
    /// The parcel, model, label or day (`total` in the total).
    pub key: String,
    pub output_tokens: u64,
    /// Runs with at least one call billed in the period.
    pub runs: u64,
    /// Calls of a model without a price: not in `cost_usd`.
    pub unpriced_calls: u64,
}

/// The cost report (`GET /v1/usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// `parcel`, `model`, `label`, `day` or `project`.
    pub by: String,
    /// The most costly first, then the most tokens, then by key.
    pub rows: Vec<UsageRow>,
    /// The period's start, RFC 3339.
    pub since: String,
    /// The period's sums, each run counted once.
    pub total: UsageRow,
    /// The period's end, RFC 3339 (not included).
    pub until: String,
}

/// One limit of a project's quota with what is used of it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaRow {
    /// `max_live_runs`, `tokens_per_day`, `tokens_per_month`, `usd_per_day` or `usd_per_month`.
    #[schema(
        pattern = "^(max_live_runs|tokens_per_day|tokens_per_month|usd_per_day|usd_per_month)$"
    )]
    pub limit: String,
    /// `wait` (new runs stay queued) or `refuse` (new runs are refused) at the hard limit.
    #[schema(pattern = "^(wait|refuse)$")]
    pub on_hard: String,
    /// The current period (`2026-11-26`, `2026-11`); null for live runs.
    #[schema(required = true)]
    pub period: Option<String>,
    pub project: String,
    /// The soft mark, percent of `value`: crossing it notifies (`quota.soft`).
    pub soft_pct: u32,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Live runs now, or tokens or USD billed in the current period.
    pub used: f64,
    /// Runs, tokens or USD.
    pub value: f64,
}

/// The limits of one or more projects (`GET /v1/quotas`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaList {
    /// By project, then limit.
    pub quotas: Vec<QuotaRow>,
}

/// The answer of `PUT /v1/quotas/{project}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaSet {
    /// The project's quota as it is now, by limit.
    pub quotas: Vec<QuotaRow>,
    /// How many of the project's runs suspended on the quota were queued
    /// again because the change makes room for them.
    pub resumed: u64,
}

/// The answer of `DELETE /v1/quotas/{project}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaRemoved {
    /// How many limits were removed.
    pub removed: u64,
    /// How many runs suspended on the quota were queued again.
    pub resumed: u64,
}

/// A session runs keep between them, as `GET /v1/sessions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionSummary {
    /// A process agent's session file is kept.
    pub file: bool,
    /// The live run that holds it now (it cannot be removed until that ends).
    #[schema(required = true)]
    pub in_use_by: Option<String>,
    /// The run whose turn saved it last.
    #[schema(required = true)]
    pub last_run: Option<String>,
    /// A native agent's conversation is kept: its number of messages.
    #[schema(required = true)]
    pub messages: Option<u64>,
    /// `<parcel>/<name>`.
    pub name: String,
    pub parcel: String,
    /// Saves of the conversation (one a turn).
    pub turns: i64,
    /// When a turn last saved it (ms since the epoch).
    pub updated_at: i64,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// Most recently used first.
    pub sessions: Vec<SessionSummary>,
}

/// A session with everything it keeps (`GET /v1/sessions/{parcel}/{name}`):
/// its summary's fields, the conversation, the file's text, and the keys of
/// the memory and checkpoints scoped to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionDetail {
    /// The keys of the named checkpoints scoped to it.
    pub checkpoints: Vec<String>,
    /// A native agent's conversation, as it saved it; null when none is kept.
    #[schema(required = true, value_type = Option<Object>)]
    pub conversation: Option<Value>,
    pub file: bool,
    /// The session file's text; null when none is kept.
    #[schema(required = true)]
    pub file_text: Option<String>,
    #[schema(required = true)]
    pub in_use_by: Option<String>,
    #[schema(required = true)]
    pub last_run: Option<String>,
    /// The keys of the memory scoped to it.
    pub memory: Vec<String>,
    #[schema(required = true)]
    pub messages: Option<u64>,
    pub name: String,
    pub parcel: String,
    pub turns: i64,
    pub updated_at: i64,
}

/// The answer of `DELETE /v1/sessions/{parcel}/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionRemoved {
    /// How many records went (the conversation, the file, memory, checkpoints).
    pub removed: u64,
}

/// The answer of `POST /v1/sessions/prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionsPruned {
    /// The removed sessions' names, sorted.
    pub removed: Vec<String>,
}

/// One message of the notification outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationRow {
    /// Unix milliseconds.
    pub created_at: i64,
    /// What the message says (kind-specific).
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(required = true)]
    pub done_at: Option<i64>,
    /// When it is next tried.
    pub due_at: i64,
    /// What makes it unique (a run, a kind, an approval or a mark).
    pub key: String,
    /// `approval.requested`, `approval.escalated`, `run.failed`, `budget.threshold`, `quota.soft`, `quota.hard`, `review.expired`
    pub kind: String,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// `delivered`, `failed` (given up) or `skipped` once settled; null while pending.
    #[schema(required = true)]
    pub outcome: Option<String>,
    pub run_id: String,
    /// The channels that have it.
    pub sent: Vec<String>,
    pub seq: i64,
    /// Delivery rounds so far.
    pub tries: u32,
}

/// The outbox (`GET /v1/notifications`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    /// Newest first.
    pub notifications: Vec<NotificationRow>,
}
