//! The parts of a [`super::RunReport`] derived from a run's event log (pure
//! functions): the timeline of steps, tool calls, usage by model and by
//! attempt, each attempt's resources, model calls, the conversation as last
//! checkpointed and the bill of materials.

use std::collections::BTreeMap;

use dispatch_core::event::Usage;
use dispatch_core::{EventKind, Ts};
use dispatch_store::{Attempt, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::parts::{AttemptResources, ModelCall, ToolCall};

/// One step of the timeline: from its start to the next step of the same
/// attempt, its own end, or the end of its attempt (`null` while going).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub attempt: u32,
    pub name: String,
    pub started_at: Ts,
    pub ended_at: Option<Ts>,
    pub duration_ms: Option<i64>,
}

impl Step {
    fn close(&mut self, at: Ts) {
        if self.ended_at.is_none() {
            self.ended_at = Some(at);
            self.duration_ms = Some(at - self.started_at);
        }
    }
}

/// The usage events of one model, summed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// How many usage events.
    pub events: u64,
}

/// One attempt with what it used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportAttempt {
    #[serde(flatten)]
    pub attempt: Attempt,
    /// The usage events of this attempt, summed.
    pub usage: Usage,
    /// `null` while it runs.
    pub duration_ms: Option<i64>,
    /// Its limits and what it used (its `resources` event), or `null`.
    pub resources: Option<AttemptResources>,
}

/// What the event log says, before the stored records are added.
pub struct Telemetry {
    pub timeline: Vec<Step>,
    pub tool_calls: Vec<ToolCall>,
    pub usage_by_model: BTreeMap<String, ModelUsage>,
    pub attempts: Vec<ReportAttempt>,
}

/// The worker an attempt of a cluster service is recorded under: the
/// server ran it, with no process of its own (pid 0).
const NO_PROCESS_WORKER: &str = "local helper 0";

/// What the report says ran an attempt of a cluster service.
pub const SERVER_WORKER: &str = "server (a cluster service, no process)";

/// The timeline, tool calls, usage by model and by attempt of `events`.
pub fn build(events: &[Event], attempts: &[Attempt]) -> Telemetry {
    let mut steps: Vec<Step> = Vec::new();
    let mut tools = Vec::new();
    let mut by_model: BTreeMap<String, ModelUsage> = BTreeMap::new();
    let mut by_attempt: BTreeMap<u32, Usage> = BTreeMap::new();
    for e in events {
        let (d, at, attempt) = (&e.event.data, e.event.at, e.event.attempt);
        match e.event.event_kind() {
            Some(EventKind::Step) => {
                let name = d["name"].as_str().unwrap_or("?");
                let ending = matches!(d["phase"].as_str(), Some("end" | "finish" | "done"));
                let open = steps
                    .iter_mut()
                    .rev()
                    .find(|s| s.attempt == attempt && s.ended_at.is_none());
                match (ending, open) {
                    (true, Some(s)) if s.name == name => s.close(at),
                    (true, _) => {}
                    (false, open) => {
                        // A new step ends the one before it.
                        if let Some(s) = open {
                            s.close(at);
                        }
                        steps.push(Step {
                            attempt,
                            name: name.to_string(),
                            started_at: at,
                            ended_at: None,
                            duration_ms: None,
                        });
                    }
                }
            }
            Some(EventKind::ToolCall) => tools.push(ToolCall::of(attempt, at, d)),
            Some(EventKind::Usage) => {
                let model = d["model"].as_str().unwrap_or("unknown").to_string();
                let u = e.event.usage().unwrap_or_default();
                let m = by_model.entry(model).or_default();
                m.input_tokens += u.input_tokens;
                m.output_tokens += u.output_tokens;
                m.cost_usd += u.cost_usd;
                m.events += 1;
                by_attempt.entry(attempt).or_default().add(u);
            }
            _ => {}
        }
    }
    // Steps still open when their attempt ended end with it.
    for s in steps.iter_mut() {
        if let Some(end) = attempts
            .iter()
            .find(|a| a.number == s.attempt)
            .and_then(|a| a.ended_at)
        {
            s.close(end);
        }
    }
    let attempts = attempts
        .iter()
        .map(|a| {
            let mut attempt = a.clone();
            if attempt.worker.as_deref() == Some(NO_PROCESS_WORKER) {
                attempt.worker = Some(SERVER_WORKER.to_string());
            }
            ReportAttempt {
                attempt,
                usage: by_attempt.get(&a.number).copied().unwrap_or_default(),
                duration_ms: a.ended_at.map(|e| e - a.started_at),
                // Null, or what the runtime wrote (else: none readable).
                resources: serde_json::from_value(resources_of(events, a.number)).ok(),
            }
        })
        .collect();
    Telemetry {
        timeline: steps,
        tool_calls: tools,
        usage_by_model: by_model,
        attempts,
    }
}

/// `{"limits": [...], "peak_memory_bytes", "cpu_time_ms", "measured_by"}` of
/// attempt `n` (with `fuel_used` when a WASM guest's fuel was metered), or
/// null when the runtime recorded none.
pub fn resources_of(events: &[Event], n: u32) -> Value {
    let of_attempt = || {
        events
            .iter()
            .rev()
            .filter(|e| e.event.is(EventKind::Resources) && e.event.attempt == n)
            .map(|e| &e.event.data)
    };
    let fuel = of_attempt().find(|d| d.get("fuel_used").is_some());
    let last = of_attempt().find(|d| d.get("fuel_used").is_none()).or(fuel);
    last.map(|d| {
        let field = |k: &str| d.get(k).cloned().unwrap_or(Value::Null);
        let mut limits = d.get("limits").cloned().unwrap_or_else(|| json!([]));
        let mut out = json!({
            "peak_memory_bytes": field("peak_memory_bytes"),
            "cpu_time_ms": field("cpu_time_ms"),
            "measured_by": field("measured_by"),
        });
        if let Some(f) = fuel {
            if !std::ptr::eq(f, d)
                && let (Some(all), Some(more)) = (limits.as_array_mut(), f["limits"].as_array())
            {
                all.extend(more.iter().cloned());
            }
            out["fuel_used"] = f["fuel_used"].clone();
        }
        out["limits"] = limits;
        out
    })
    .unwrap_or(Value::Null)
}

/// Every model call (its event's fields with `seq`, `attempt` and `at`).
pub fn model_calls(events: &[Event]) -> Vec<ModelCall> {
    events
        .iter()
        .filter(|e| e.event.is(EventKind::ModelCall))
        .map(|e| ModelCall::of(e.seq, e.event.attempt, e.event.at, &e.event.data))
        .collect()
}

/// A native agent's conversation as last checkpointed (its checkpoints are
/// deltas after the first: folded), or null.
pub fn conversation(events: &[Event]) -> Value {
    dispatch_core::checkpoint::fold(
        events
            .iter()
            .filter(|e| e.event.is(EventKind::Checkpoint))
            .map(|e| &e.event.data),
    )
    .filter(|c| c["state"]["messages"].is_array())
    .map(|c| {
        let s = &c["state"];
        json!({"system": s["system"], "messages": s["messages"], "rounds": s["rounds"], "calls": s["calls"]})
    })
    .unwrap_or(Value::Null)
}

/// The bill of materials of the run's latest attempt (its `bom` event).
pub fn bom(events: &[Event]) -> Value {
    events
        .iter()
        .rev()
        .find(|e| e.event.is(EventKind::Bom))
        .map(|e| {
            let mut b = e.event.data.clone();
            b["attempt"] = json!(e.event.attempt);
            b
        })
        .unwrap_or(Value::Null)
}

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod tests;
