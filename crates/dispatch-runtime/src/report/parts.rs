//! The typed parts of a [`super::RunReport`] that events and stored rows
//! make: tool calls, model calls, each attempt's resources and a service's
//! state. Each serializes to the JSON the report has always had.

use dispatch_core::Ts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::service::model::{ListenerState, ScheduleState, ServiceConfig, ServiceDoc};

/// One `tool_call` event. Its fields are the event's (null when it has
/// none, or one of another type); `input`, `output` and `requested_input`
/// are the tool's own JSON, free-form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub attempt: u32,
    pub at: Ts,
    pub name: Option<String>,
    pub ok: Option<bool>,
    pub duration_ms: Option<i64>,
    /// `builtin`, `mcp`, `http`, `cli`, `hosted`, …
    pub kind: Option<String>,
    /// The arguments it ran with.
    pub input: Value,
    /// What it answered (usually text).
    pub output: Value,
    pub bytes: Option<u64>,
    pub truncated: Option<bool>,
    /// The approval it waited for: `id`, `decision`, `by`, `rationale`,
    /// `edited` (as the agent recorded it), or null.
    pub approval: Value,
    /// With an approver's edit: the arguments the model asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_input: Option<Value>,
    /// With an approver's edit: who changed the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_by: Option<EditedBy>,
}

/// Who changed a tool call's arguments before it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditedBy {
    pub by: String,
    /// The approval's id.
    pub approval: String,
    pub at: Ts,
}

impl ToolCall {
    /// The record of a `tool_call` event's `data` (of `attempt`, at `at`).
    pub fn of(attempt: u32, at: Ts, d: &Value) -> ToolCall {
        let string = |k: &str| d[k].as_str().map(str::to_string);
        ToolCall {
            attempt,
            at,
            name: string("name"),
            ok: d["ok"].as_bool(),
            duration_ms: d["duration_ms"].as_i64(),
            kind: string("kind"),
            input: d["input"].clone(),
            output: d["output"].clone(),
            bytes: d["bytes"].as_u64(),
            truncated: d["truncated"].as_bool(),
            approval: d["approval"].clone(),
            requested_input: d.get("requested_input").cloned(),
            edited_by: d
                .get("edited_by")
                .and_then(|e| serde_json::from_value(e.clone()).ok()),
        }
    }
}

/// One `model_call` event: where and when in the log, then the event's
/// own fields. Those are left free-form (a provider call's record grows
/// with the providers, and whether a field is absent or null is kept);
/// the methods read the ones that are shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCall {
    pub seq: i64,
    pub attempt: u32,
    pub at: Ts,
    /// `model`, `provider`, `base_url`, `call`, `round`, tokens, `cost_usd`
    /// (null when the model has no price), `latency_ms`, `first_token_ms`,
    /// `finish_reason`, `retry`, `fallback`, `fallback_from`, `estimated`,
    /// `truncated`, `error`, `request_sha256`, `response_sha256`, …
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl ModelCall {
    /// The record of a `model_call` event's `data`.
    pub fn of(seq: i64, attempt: u32, at: Ts, data: &Value) -> ModelCall {
        let mut fields = data.as_object().cloned().unwrap_or_default();
        for k in ["seq", "attempt", "at"] {
            fields.remove(k);
        }
        ModelCall {
            seq,
            attempt,
            at,
            fields,
        }
    }

    /// Field `k`, null when absent.
    pub fn get(&self, k: &str) -> &Value {
        self.fields.get(k).unwrap_or(&Value::Null)
    }

    pub fn str(&self, k: &str) -> Option<&str> {
        self.get(k).as_str()
    }

    pub fn u64(&self, k: &str) -> Option<u64> {
        self.get(k).as_u64()
    }

    fn flag(&self, k: &str) -> bool {
        self.get(k).as_bool() == Some(true)
    }

    /// Billed an estimate (the call was cut, stopped or lost).
    pub fn estimated(&self) -> bool {
        self.flag("estimated")
    }

    pub fn fallback(&self) -> bool {
        self.flag("fallback")
    }

    /// Cut at its output limit.
    pub fn truncated(&self) -> bool {
        self.flag("truncated")
    }

    /// `None` when its model has no price.
    pub fn cost_usd(&self) -> Option<f64> {
        self.get("cost_usd").as_f64()
    }

    pub fn error(&self) -> Option<&str> {
        self.str("error")
    }

    /// Billed (whole, or estimated) without a known price.
    pub fn cost_unknown(&self) -> bool {
        (self.get("error").is_null() || self.estimated()) && self.get("cost_usd").is_null()
    }
}

/// An attempt's limits and what it used (its `resources` event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptResources {
    pub limits: Vec<ReportLimit>,
    pub peak_memory_bytes: Option<u64>,
    pub cpu_time_ms: Option<u64>,
    /// `cgroup v1`, `rusage`, `wasmtime fuel`, …
    pub measured_by: Option<String>,
    /// The fuel a WASM guest burned, when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
}

/// One limit in effect and how it was enforced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportLimit {
    /// `cpus`, `memory`, `pids`, `disk`, `fuel`.
    pub limit: String,
    /// As declared: `1`, `512M`.
    pub value: String,
    /// `cgroup_v1`, `cgroup_v2`, `container`, `rlimit`, `watch`,
    /// `not_applied`, `wasmtime`.
    pub how: String,
    /// What an approximation leaves out, or why it was not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A service run's stored state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// The name a cluster service is served under; null for a local one.
    pub name: Option<String>,
    pub config: ServiceConfig,
    pub schedules: Vec<ScheduleState>,
    pub listeners: Vec<ListenerState>,
    pub updated_at: Ts,
}

impl ServiceReport {
    /// The report of a stored service state; `None` when its documents do
    /// not decode (a row this version cannot read).
    pub fn of(state: &dispatch_store::ServiceState) -> Option<ServiceReport> {
        let doc = ServiceDoc::decode(state).ok()?;
        Some(ServiceReport {
            name: state.name.clone(),
            config: doc.config,
            schedules: doc.schedules,
            listeners: doc.listeners,
            updated_at: state.updated_at,
        })
    }
}
