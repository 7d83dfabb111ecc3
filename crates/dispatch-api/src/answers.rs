//! The shapes of the API's answers and query strings.
//!
//! The server builds every answer as these types (from the store's
//! records, on its side: `api/wire.rs`, `api/wire_runs.rs`,
//! `api/wire_ops.rs`), with the types of [`crate::run_parts`] and
//! [`crate::operations`] beside these, for the OpenAPI document and for
//! clients that read them typed. Types keep their fields in name order:
//! that is the order the answers have always had. Free-form JSON (a run's payload,
//! output and state data, an event's data, a bill of materials) is any
//! JSON. The server's contract test validates real answers against the
//! document, where every object refuses fields it does not name, so a field
//! added to a record without its line here fails it. Every field of an
//! answer is present (`null` when it has no value) unless marked
//! `required = false` (and `#[serde(default)]` here).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Every error answer: a stable `code` and words for a person.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Error {
    /// Stable: see the list of codes (the enum below).
    pub code: String,
    pub message: String,
}

/// A run's status: the run model's own (`dispatch_core::Status`), whose
/// schema is `RunStatus`.
pub use dispatch_core::Status as RunStatus;

/// What a run executes: the run model's own (`dispatch_core::Operation`).
pub use dispatch_core::Operation;

/// Which backend runs a parcel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Courier {
    Process,
    Noop,
    Agent,
    /// A container (`FROM image <ref>`).
    Image,
    /// A coordinator of other parcels (`FROM workflow`).
    Workflow,
}

/// Tokens and cost, summed per run. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// US dollars.
    pub cost_usd: f64,
    #[schema(minimum = 0)]
    pub input_tokens: u64,
    #[schema(minimum = 0)]
    pub output_tokens: u64,
}

/// A run as stored, with its status: what every answer that shows a run
/// holds (the server builds it from the store's record).
///
/// The fields are in name order, the order the server has always written
/// them in, so that answers stay byte for byte what they were.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// The current attempt, from 1.
    pub attempt: u32,
    pub brief_sha256: String,
    /// Only in the answer of `GET /v1/runs/{id}`: the run's concurrency key
    /// (`<parcel>/<value>`), MAX and strategy, when it has one (and in a
    /// run's report, where it is null when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub concurrency: Option<Concurrency>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Only in the answers of `POST /v1/runs` and `POST /v1/runs/batch`:
    /// true when an idempotency key matched an existing run, which is
    /// answered instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = bool)]
    pub deduplicated: Option<bool>,
    /// 32 hex digits, time-ordered.
    pub id: String,
    /// The labels it was dispatched with: only a worker with all of them claims it.
    pub labels: Vec<String>,
    pub operation: Operation,
    /// The run this one restarts or replays, or that handed off to it
    /// (`trigger` upstream).
    #[schema(required = true)]
    pub origin_id: Option<String>,
    /// The run's result, when it has one.
    #[schema(required = true)]
    pub output: Option<Value>,
    pub parcel_digest: String,
    pub parcel_name: String,
    /// The run that started this one.
    #[schema(required = true)]
    pub parent_id: Option<String>,
    /// The run's input (null in a list when the store leaves it out).
    pub payload: Value,
    /// The project it belongs to (`default` unless created in another).
    pub project: String,
    /// The status with its data (times, processes, exit code, reason).
    #[schema(value_type = Object)]
    pub state: Value,
    pub status: RunStatus,
    /// Unix milliseconds.
    #[schema(required = true)]
    pub stop_requested_at: Option<i64>,
    /// What started it: `manual`, `restart`, `replay`, `upstream` (a
    /// handoff of `origin_id`), `eval` or `workflow`.
    #[schema(pattern = "^(manual|restart|replay|upstream|eval|workflow)$")]
    pub trigger: String,
    /// Unix milliseconds of the last state change.
    pub updated_at: i64,
    pub usage: Usage,
    /// Bumped by every state change.
    pub version: i64,
    /// Only while the run is queued and something holds it back: why, in
    /// words (`no live worker has label gpu`, `concurrency key
    /// parcel/customer-42: 2 of 2 running`, `retry backoff: attempt 3 starts
    /// in 12 s`, `every live worker that can take it is busy (4 of 4 slots)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    pub waiting: Option<String>,
}

/// A run's concurrency key as dispatched.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Concurrency {
    pub key: String,
    pub max: u32,
    #[schema(pattern = "^(queue|cancel-in-progress|drop)$")]
    pub strategy: String,
}

/// What became of a signal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalAnswer {
    /// `woke`: the run was waiting for it and is queued again; `kept`: kept
    /// for the run's first wait on that name.
    #[schema(pattern = "^(woke|kept)$")]
    pub delivered: String,
    pub run: Run,
}

/// What `DELETE /v1/runs/{id}` removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    /// The removed run's full id.
    pub removed: String,
}

/// What a prune removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PruneAnswer {
    /// The removed runs' ids, newest first.
    pub removed: Vec<String>,
    /// Bytes of the server's files and stored briefs deleted (0 for a dry run).
    pub reclaimed_bytes: u64,
    /// Runs the filters select that were kept for their dead letter or pending approval.
    pub kept: u64,
    pub dry_run: bool,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    pub runs: Vec<Run>,
}

/// A stored event. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Unix milliseconds.
    pub at: i64,
    pub attempt: u32,
    pub data: Value,
    pub run_id: String,
    /// Position in the store's event log; increases with every append.
    pub seq: i64,
    /// `state`, `usage`, `step`, `tool_call`, `warning`, …
    #[serde(rename = "type")]
    pub kind: String,
}

/// One server-sent event of a run's stream, as a client's SSE parser
/// reads it (the stream is `text/event-stream`; this describes each event).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SseEvent {
    /// The event's `type` (`state`, `step`, `tool_call`, …; `delta` for
    /// text a native agent generates).
    pub event: String,
    /// The event's `seq` (none on a `delta`): resume with `Last-Event-ID`.
    #[serde(default)]
    #[schema(required = false, pattern = "^[0-9]+$")]
    pub id: String,
    /// The event as JSON: a `StreamEvent` (an [`Event`] in the stream's
    /// field order), a `StreamDelta` for `delta`.
    pub data: String,
    /// Reconnection time in milliseconds, when the server sets one.
    #[serde(default)]
    #[schema(required = false, minimum = 0)]
    pub retry: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// One try of a run. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// Unix milliseconds; null while it runs.
    #[schema(required = true)]
    pub ended_at: Option<i64>,
    #[schema(required = true)]
    pub error: Option<String>,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    /// From 1.
    pub number: u32,
    /// Unix milliseconds.
    pub started_at: i64,
    /// How it ended; null while it runs.
    #[schema(required = true)]
    pub status: Option<RunStatus>,
    /// The worker that ran it (`local helper <pid>` for a local run); null
    /// in databases from before it was recorded.
    #[schema(required = true)]
    pub worker: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<Attempt>,
}

/// A file a run produced, stored content-addressed. (Fields in name
/// order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    /// Path relative to the run's artifacts directory.
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<Artifact>,
}

/// One attempt's bill of materials, as its `bom` event recorded it.
/// (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BomAttempt {
    /// When it was recorded (Unix milliseconds).
    pub at: i64,
    pub attempt: u32,
    #[schema(value_type = Object)]
    pub bom: Value,
}

/// The bills of materials of a run (none for a run that is not native).
/// (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Bom {
    /// Every attempt's, oldest first.
    pub attempts: Vec<BomAttempt>,
    /// The latest attempt's; null when there is none.
    #[schema(value_type = Option<Object>, required = true)]
    pub bom: Value,
    /// The run's full id.
    pub run: String,
}

/// One member of a workflow (or `__start__`, `__end__`, `__coordinator__`).
/// (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphNode {
    /// Its turns' time together (ms).
    pub duration_ms: i64,
    pub id: String,
    /// Its child runs, in the order they were started.
    pub runs: Vec<crate::GraphRun>,
    /// How many child runs (turns) it had.
    pub turns: u64,
    /// Its turns' tokens and cost together.
    pub usage: Usage,
}

/// Messages that went from one node to another. (Fields in name order, as
/// on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphEdge {
    pub count: u64,
    pub from: String,
    /// Counts by kind (TASK, RESULT, VALIDATION, ERROR, CONTROL).
    pub kinds: std::collections::BTreeMap<String, u64>,
    pub to: String,
}

/// One message of a workflow. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphMessage {
    /// When it was recorded (ms since the epoch).
    pub at: i64,
    /// The child run that delivers it (none for `__end__`).
    #[schema(required = true)]
    pub child_run: Option<String>,
    /// Whether that run exists.
    pub delivered: bool,
    pub from: String,
    pub id: String,
    pub kind: String,
    /// The child run that sent it (none for the workflow's input or an aggregate).
    #[schema(required = true)]
    pub sender_run: Option<String>,
    pub seq: i64,
    pub to: String,
}

/// A workflow run's communication graph (empty for a run that is not a
/// workflow). (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Graph {
    pub edges: Vec<GraphEdge>,
    pub messages: Vec<GraphMessage>,
    /// The workflow's parcel name.
    pub name: String,
    /// Its members, in the order they first sent or received a message.
    pub nodes: Vec<GraphNode>,
    /// The workflow run's full id.
    pub workflow: String,
}

/// An approval an agent asked for. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub attempt: u32,
    /// When it is denied automatically, if ever.
    #[schema(required = true)]
    pub deadline: Option<i64>,
    #[schema(required = true)]
    pub decided_at: Option<i64>,
    #[schema(required = true)]
    pub decided_by: Option<String>,
    /// `approve` or `deny`, once decided (`cancelled` when its run ended first).
    #[schema(required = true)]
    pub decision: Option<String>,
    /// What is asked, beyond the summary (a tool call's tool, arguments, risk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub details: Option<Value>,
    /// The agent's id for it (unique within the run).
    pub id: String,
    /// Arguments the approver gave in place of the ones asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub input: Option<Value>,
    /// Its run's project (in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    pub project: Option<String>,
    #[schema(required = true)]
    pub rationale: Option<String>,
    pub requested_at: i64,
    pub run_id: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

/// A run whose attempts are exhausted, with its run's parcel, operation,
/// input and status. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// When it was dead-lettered (Unix milliseconds).
    pub at: i64,
    pub attempts: u32,
    /// The last attempt's last checkpoint.
    #[schema(required = true)]
    pub checkpoint: Option<Value>,
    /// One entry per failed attempt: `{attempt, status, exit_code, error}`.
    pub errors: Value,
    /// Its run's payload.
    pub input: Value,
    pub operation: Operation,
    pub parcel_digest: String,
    pub parcel_name: String,
    /// Its run's project.
    pub project: String,
    pub reason: String,
    /// The run that replayed it, once replayed.
    #[schema(required = true)]
    pub replayed_by: Option<String>,
    pub run_id: String,
    /// Its run's status now.
    pub status: RunStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
}

/// A built parcel. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Parcel {
    pub courier: Courier,
    /// When it was first stored (ms since the epoch).
    pub created_at: i64,
    pub digest: String,
    pub entrypoint: Operation,
    /// How many files it holds (and, in `size`, their bytes).
    pub files: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub name: String,
    pub size: u64,
    #[schema(required = true)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParcelList {
    pub parcels: Vec<Parcel>,
}

/// The parcel an upload built. (Fields in name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParcelBuilt {
    pub digest: String,
    /// How many files it holds.
    pub files: u64,
    pub name: String,
    #[schema(required = true)]
    pub version: Option<String>,
}

/// The parcels a prune removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParcelsPruned {
    pub removed: Vec<String>,
}

/// The parcel a removal removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParcelRemoved {
    pub digest: String,
    pub name: String,
}

/// The policy overrides of `POST /v1/runs`, like `dispatch run`'s flags;
/// stored with the run and applied by the worker to every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Retries after the first attempt (`--retries`).
    pub retries: Option<u32>,
    /// `<initial>..<max>` between attempts, doubled each retry, with jitter,
    /// e.g. `1s..30s` (`--backoff`).
    pub backoff: Option<String>,
    /// Time limit of each attempt, a duration: `500ms`, `30s`, `5m`, `2h`
    /// (no unit: seconds) (`--timeout`).
    pub timeout: Option<String>,
    /// Time limit of each step, a duration (`--step-timeout`).
    pub step_timeout: Option<String>,
    /// Stop the run past this many tokens (`--max-tokens`).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u64>,
    /// Stop the run past this many US dollars (`--max-cost`).
    #[schema(exclusive_minimum = 0)]
    pub max_cost: Option<f64>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `POST /v1/runs` query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateRunQuery {
    /// Block until the run has ended (200), or `timeout` passed (202).
    pub wait: Option<bool>,
    /// Seconds `wait` blocks at most (default 30, at most 300).
    #[param(minimum = 0, maximum = 300)]
    pub timeout: Option<f64>,
}

/// The body of `POST /v1/runs/batch`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRuns {
    /// 1 to 1,000 runs, each a `createRun` body (`start: false` is refused).
    pub runs: Vec<crate::CreateRun>,
}

/// The answer of `POST /v1/runs/batch`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedRuns {
    /// Every run, in the order asked; `deduplicated` says which an
    /// idempotency key matched.
    pub runs: Vec<Run>,
}

/// `POST /v1/runs` headers.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CreateRunHeaders {
    /// W3C trace context (`00-<trace id>-<parent id>-<flags>`): the run's
    /// trace joins it, and its agents get it as `TRACEPARENT`.
    #[param(required = false, value_type = String)]
    pub traceparent: Option<String>,
}

/// `GET /v1/runs` query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only this project's runs; the token must be bound to it (default:
    /// every project the token may see).
    pub project: Option<String>,
    /// Comma-separated statuses, any of them.
    pub status: Option<String>,
    /// A parcel's name or digest prefix.
    pub parcel: Option<String>,
    /// The parent run's id or unique prefix.
    pub parent: Option<String>,
    pub operation: Option<Operation>,
    /// What started the runs: `manual`, `restart`, `replay`, `upstream`,
    /// `eval` or `workflow`.
    pub trigger: Option<String>,
    /// Comma-separated labels, all required: runs dispatched with every one
    /// (the parameter may be repeated).
    pub label: Option<String>,
    /// Runs created at or after this time: RFC 3339 (`2026-11-21T10:00:00Z`;
    /// write a `+` offset as `%2B`) or an age before now (`30s`, `10m`, `2h`,
    /// `7d`); when paging, send the same absolute time with every page.
    pub created_after: Option<String>,
    /// Runs created before this time (exclusive), in the same forms as
    /// `created_after`.
    pub created_before: Option<String>,
    /// Page size (default 50; 0 counts as 1; at most 1000).
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/runs/{id}` query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetRunQuery {
    /// Seconds (at most 60): answer once the run has ended, or after that
    /// long (a long poll).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<f64>,
}

/// The one value of `format`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventsFormat {
    Json,
}

/// `GET /v1/runs/{id}/events` query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this event seq (like `Last-Event-ID`, which wins).
    pub after: Option<i64>,
    /// `json`: the events stored so far as one document, not a stream.
    #[param(inline)]
    pub format: Option<EventsFormat>,
}

/// `GET /v1/runs/{id}/logs` query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Stream until the run ends.
    pub follow: Option<bool>,
}

/// `GET /v1/approvals` query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalsQuery {
    /// `false` to list decided approvals too (default: pending only).
    pub pending: Option<bool>,
    /// Only this run's (id or unique prefix).
    pub run: Option<String>,
    /// Only this project's; the token must be bound to it (default: every
    /// project the token may see).
    pub project: Option<String>,
}

/// An eval's report, as `dispatch eval --format json` prints it: the
/// fields the server reads, and every other field (`stopped`, `baseline`,
/// …) kept as sent. Answered as one object in name order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(into = "Value")]
pub struct EvalReport {
    /// When the eval started (ms since the epoch).
    pub created_at: i64,
    /// The eval's id.
    pub eval: String,
    /// The digest of the parcel evaluated.
    pub parcel: String,
    pub parcel_name: String,
    /// One outcome per run: case, repeat, run_id, passed, failures, status, tokens, cost, time.
    pub results: Vec<Value>,
    /// Totals and the pass rate (absent only from a report sent without).
    #[serde(default)]
    #[schema(required = false, value_type = Object)]
    pub summary: Option<Value>,
    /// Every other field of the report, as sent, written among the rest in
    /// name order.
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: serde_json::Map<String, Value>,
}

impl From<EvalReport> for Value {
    fn from(report: EvalReport) -> Value {
        // In name order, whatever order a JSON map keeps.
        let mut map: std::collections::BTreeMap<String, Value> = report.other.into_iter().collect();
        map.insert("created_at".into(), report.created_at.into());
        map.insert("eval".into(), report.eval.into());
        map.insert("parcel".into(), report.parcel.into());
        map.insert("parcel_name".into(), report.parcel_name.into());
        map.insert("results".into(), report.results.into());
        if let Some(summary) = report.summary {
            map.insert("summary".into(), summary);
        }
        Value::Object(map.into_iter().collect())
    }
}

/// `GET /v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<Worker>,
}

/// A worker as it last said, and the runs it holds. (Fields in name
/// order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    /// The machine it runs on (its hostname): with `pid`, who holds the name.
    pub host: String,
    /// The labels it offers.
    pub labels: Vec<String>,
    /// How long its leases last.
    pub lease_ms: i64,
    /// Unique in the cluster: the lease owner.
    pub name: String,
    pub pid: u32,
    /// When it last renewed a lease it holds (ms since the epoch); null without leases.
    #[schema(required = true)]
    pub renewed_at: Option<i64>,
    /// When it last said it was there (every 5 s).
    pub seen_at: i64,
    pub slots: u32,
    pub started_at: i64,
    /// `working`, `stopped` (drained), or `silent` (not heard from for three beats).
    #[schema(pattern = "^(working|stopped|silent)$")]
    pub state: String,
    /// When it stopped (drained); null while it works.
    #[schema(required = true)]
    pub stopped_at: Option<i64>,
    /// Live runs (starting, running, paused) leased to it.
    pub used: u32,
}

/// A kept eval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalKept {
    pub eval: String,
}

/// What `POST /v1/services` started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceCreated {
    /// Its webhook on every server (`/hooks/<name>[/<path>]`), when it has one.
    #[schema(required = true)]
    pub hook: Option<String>,
    /// The name it is served under.
    pub name: String,
    /// The service run (`running`, with no process).
    pub run: Run,
    /// Its timers: cron expressions, or `every <n>ms`.
    pub schedules: Vec<String>,
}

/// A webhook request accepted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookAccepted {
    /// The heartbeat run that executes the wake.
    pub run_id: String,
    #[schema(pattern = "^accepted$")]
    pub status: String,
}

/// A webhook request refused, as a local service's listener answers it:
/// `not_found`, `method_not_allowed`, `unauthorized`, `body_too_large`,
/// `headers_too_large`, `bad_body`, `stopping`, `wake_failed`, `unavailable`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookError {
    pub code: String,
    pub message: String,
}

/// `GET /v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceItem>,
}

/// A running service: its run and its stored state. (Fields in name
/// order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceItem {
    pub created_at: i64,
    /// The service's run id.
    pub id: String,
    pub parcel_digest: String,
    pub parcel_name: String,
    /// The project it belongs to.
    pub project: String,
    /// Null until its helper saved it.
    #[schema(required = true)]
    pub state: Option<ServiceState>,
    pub status: RunStatus,
}

/// A service's stored state (`GET /v1/runs/{id}/service`). (Fields in
/// name order, as on the wire.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceState {
    /// Wake sources, overlap and ingress policy (the shared secret's SHA-256 only).
    #[schema(value_type = Object)]
    pub config: Value,
    /// Each listener: address, requests handled and rejected, last request.
    #[schema(value_type = Vec<Object>)]
    pub listeners: Value,
    /// The name a cluster service is served under; null for a local service.
    #[schema(required = true)]
    pub name: Option<String>,
    /// Each timer: its expression or interval, `next_fire_at`, `last_fired_at`, fires, skips.
    #[schema(value_type = Vec<Object>)]
    pub schedules: Value,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}
