//! The bodies of the API's requests, as the server reads them: every one
//! refuses a field it does not name (`deny_unknown_fields`: a 400 names the
//! field), and the OpenAPI document says so (`additionalProperties: false`).
//! The CLI's remote mode sends the same types. Those it builds field by
//! field do not write a field left at its default (`None`, an empty list,
//! `false`), so a body says only what its sender chose; the server reads
//! an absent field as that default, as it always has.

use std::collections::BTreeMap;

use dispatch_core::Operation;
use dispatch_core::policy::PolicyInput;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::answers as schemas;

/// The body of `POST /v1/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// A built parcel's name or digest (prefix); upload with `POST /v1/parcels`.
    pub parcel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schemas::Operation>)]
    pub operation: Option<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Higher is claimed first; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Labels a worker needs to run it (`gpu`, `eu`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// `http(s)://host[:port]/path` to POST the finished run to, signed
    /// (loopback, link-local and metadata addresses are refused by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// How long the run may wait to be claimed (`30s`, `5m`) each time it
    /// is queued; nobody claimed it by then: it ends `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<String>,
    /// While a run with this key is live or succeeded, answer it instead of
    /// creating another (`--idempotency-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Derive the key from parcel digest + operation + payload (`--dedup`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dedup: bool,
    /// Create a new run even when the key matches one (`--force`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Bind the parcel's named session; one live run per session (`--session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Overrides of the parcel's RETRY / TIMEOUT / LIMIT policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schemas::Policy>)]
    pub policy: Option<PolicyInput>,
    /// False: the run is `created`, out of the queue, until
    /// `POST /v1/runs/{id}/start` (`dispatch create`). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Keep the run's workspace after it ends, until the run is removed
    /// (`--keep-workspace`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_workspace: bool,
    /// The run's concurrency key value, instead of the one the parcel's
    /// `CONCURRENCY KEY` path gives (`--concurrency-key`); keys are per parcel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// At most this many live runs of the key (`--concurrency-max`; the
    /// parcel's MAX, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_max: Option<u32>,
    /// `queue` (wait in order), `cancel-in-progress` (cancel the oldest of
    /// the key), `drop` (cancel this run at once when the key is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub concurrency_strategy: Option<dispatch_core::concurrency::Strategy>,
    /// A native agent's primary model name, instead of its MODEL's
    /// (`--model`; `LLM_MODEL` of the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Call the primary model at this OpenAI-compatible base URL, alone
    /// (`--base-url`; `LLM_BASE_URL` of the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The primary model's provider: `openai` (Responses API),
    /// `openai_chat`, `anthropic`, `gemini` or `openai_compatible` (`--provider`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `low`, `medium` or `high` (`--reasoning-effort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// The project the run belongs to (`--project`); default `default`.
    /// The token needs role `runner` (or more) there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// The body of `POST /v1/runs/{id}/replay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = ReplayRun)]
#[serde(deny_unknown_fields)]
pub struct ReplayRunBody {
    /// Must be true: the agent runs again for real and may repeat its side effects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_side_effects: bool,
}

/// `POST /v1/parcels` as JSON: the files of an Agentfile directory, as text
/// (small parcels; `application/x-tar` takes any files, up to 2 GiB).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ParcelUpload)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Relative path → UTF-8 content. Must include `Agentfile`.
    pub files: BTreeMap<String, String>,
    /// The files (of `files`) that are executable: they keep their mode,
    /// so the parcel and its digest are those of a local build.
    #[serde(default)]
    pub executable: Vec<String>,
}

/// `POST /v1/parcels/prune`: no options yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneParcels {}

/// The request body, required: `{}` prunes every finished run without a
/// dead letter or pending approval, so a request that says nothing (a
/// stray or forged POST) removes nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PruneRequest)]
pub struct PruneBody {
    /// Which finished runs; values of one key are alternatives, keys must all hold.
    #[serde(default)]
    pub filters: PruneFilters,
    /// Also runs with a dead letter not replayed yet or a pending approval.
    #[serde(default)]
    pub dead_letters: bool,
    /// Only say which runs would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// `dispatch prune --filter KEY=VALUE`, as lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneFilters {
    /// Terminal statuses (`succeeded`, `failed`, `timed_out`, `cancelled`, `stopped`).
    #[serde(default)]
    pub status: Vec<String>,
    /// Ended before: an RFC 3339 time, or an age like `30m`, `24h`, `7d`
    /// (the earliest of several wins).
    #[serde(default)]
    pub until: Vec<String>,
    /// Parcel names or digest prefixes.
    #[serde(default)]
    pub parcel: Vec<String>,
}

/// `POST /v1/runs/{id}/approvals/{approval_id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Decision)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// `approve` or `deny`.
    #[schema(pattern = "^(approve|deny)$")]
    pub decision: String,
    /// Who decides.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// With `approve` of a tool call: arguments to use instead of the ones
    /// asked for (checked against the tool's schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// `POST /v1/dead-letters/{id}/replay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = Replay)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Replaces the dead-lettered run's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// The body of `POST /v1/services`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    /// A built parcel's name or digest (prefix); upload with `POST /v1/parcels`.
    /// Not needed with `restart_of`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parcel: String,
    /// Restart this ended cluster service (`dispatch restart`): the same
    /// parcel, name, payload, configuration and timers; a fire it missed
    /// meanwhile becomes one `recovery` wake. The other fields are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_of: Option<String>,
    /// The project the service (and each of its turns) belongs to; default
    /// `default` (a restart keeps the old one's). The token needs role
    /// `runner` (or more) there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The name it is served under (`/hooks/<name>/…`), unique among running
    /// services; the parcel's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What timer and manual wakes carry by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Cron expressions (5 fields, or 6 with seconds first), UTC, added to
    /// the Agentfile's SCHEDULE lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    /// A plain interval; 0 turns the default (30 s without schedules or
    /// webhook) off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Serve a webhook even without LISTEN in the Agentfile (the address is
    /// not used: the servers serve it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_methods: Vec<String>,
    /// Hex SHA-256 of the webhook's shared secret (the secret stays with the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_secret_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_max_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_max_header_bytes: Option<u64>,
    /// Serve a webhook that has no shared secret nor LISTEN_SIGNATURE
    /// (refused otherwise, `bad_request`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// A wake arriving while earlier ones are queued or running: `queue`
    /// (the default: one at a time, later ones wait), `skip` (dropped; a
    /// webhook request gets 503) or `concurrent` (up to `max_concurrent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// How many wakes run at once under `concurrent` (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// How many wakes may wait for their turn (default 100); more are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    /// Serve it as an A2A agent at its webhook (`dispatch serve --a2a
    /// --host`): the card at `/hooks/<name>/.well-known/agent-card.json`,
    /// JSON-RPC at the hook; each message a heartbeat run in its context's
    /// session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub a2a: bool,
    /// With `a2a`: the endpoint URL its card announces (default: the hook
    /// on the server that answers, `http://<Host>/hooks/<name><path>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_url: Option<String>,
    /// With `a2a`: a context's session unused this long (ms) is removed
    /// (none a live task holds); kept until removed by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ttl_ms: Option<u64>,
}

/// The body of `POST /v1/runs/{id}/wake`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeRequest {
    /// The wake's payload (`{}` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// The request body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Signal)]
pub struct SignalBody {
    /// The signal's name (letters, digits, `-`, `_`, `.`, `:`; at most 200).
    pub name: String,
    /// Handed to the woken attempt in `$DISPATCH_RESUME`; `null` when not given.
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub value: Value,
}
