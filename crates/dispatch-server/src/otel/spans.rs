//! A finished run's trace, built from what the store recorded of it: one
//! span for the run, one per attempt under it, and under each attempt one
//! per step, model call and tool call, timed by their events. Pure: the
//! same records give the same spans (ids derived from the run, see
//! `dispatch_core::trace`), whichever process builds them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_core::trace::{TraceParent, span_id, trace_id};
use dispatch_core::{EventKind, Status as RunStatus, Ts};
use dispatch_store::{Attempt, Event, Run};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde_json::Value;

/// What the trace of one run is built from.
pub struct Recorded<'a> {
    pub run: &'a Run,
    pub attempts: &'a [Attempt],
    pub events: &'a [Event],
    /// The `traceparent` the run was created under, as stored.
    pub traceparent: Option<&'a str>,
}

fn time(ms: Ts) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Builds spans of one trace.
struct Builder<'a> {
    trace: TraceId,
    scope: &'a InstrumentationScope,
    run: &'a Run,
}

impl Builder<'_> {
    fn span(
        &self,
        key: &str,
        parent: SpanId,
        name: String,
        (start, end): (Ts, Ts),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace,
                SpanId::from_bytes(span_id(&self.run.id, key)),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(name),
            start_time: time(start),
            end_time: time(end.max(start)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

fn run_status(status: Option<RunStatus>, error: Option<&str>) -> Status {
    match status {
        Some(RunStatus::Succeeded) => Status::Ok,
        Some(s) if s.is_terminal() => Status::error(error.unwrap_or(s.as_str()).to_string()),
        _ => Status::Unset,
    }
}

/// The spans of `rec`, the run's first.
pub fn spans(rec: &Recorded<'_>, scope: &InstrumentationScope) -> Vec<SpanData> {
    let run = rec.run;
    let given = rec.traceparent.and_then(|t| t.parse::<TraceParent>().ok());
    let b = Builder {
        trace: TraceId::from_bytes(trace_id(&run.id, given.as_ref())),
        scope,
        run,
    };
    let run_end = run.state.ended_at().unwrap_or(run.updated_at);
    let mut out = Vec::with_capacity(1 + rec.attempts.len() + rec.events.len());
    let root_parent = given.map_or(SpanId::INVALID, |g| SpanId::from_bytes(g.parent_id));
    let mut root = b.span(
        "",
        root_parent,
        format!("run {}", run.parcel_name),
        (run.created_at, run_end),
        vec![
            KeyValue::new("dispatch.run.id", run.id.to_string()),
            KeyValue::new("dispatch.parcel.name", run.parcel_name.clone()),
            KeyValue::new("dispatch.parcel.digest", run.parcel_digest.clone()),
            KeyValue::new("dispatch.operation", run.operation.to_string()),
            KeyValue::new("dispatch.run.status", run.status().as_str()),
            KeyValue::new("dispatch.run.attempts", i64::from(run.attempt)),
            KeyValue::new("gen_ai.usage.input_tokens", run.usage.input_tokens as i64),
            KeyValue::new("gen_ai.usage.output_tokens", run.usage.output_tokens as i64),
        ],
        run_status(Some(run.status()), None),
    );
    root.parent_span_is_remote = given.is_some();
    root.span_kind = SpanKind::Server;
    let root_id = root.span_context.span_id();
    out.push(root);

    let mut attempt_ids = HashMap::new();
    for a in rec.attempts {
        let key = format!("attempt/{}", a.number);
        let mut attributes = vec![KeyValue::new("dispatch.attempt", i64::from(a.number))];
        if let Some(w) = &a.worker {
            attributes.push(KeyValue::new("dispatch.worker", w.clone()));
        }
        if let Some(code) = a.exit_code {
            attributes.push(KeyValue::new("process.exit.code", i64::from(code)));
        }
        let span = b.span(
            &key,
            root_id,
            format!("attempt {}", a.number),
            (a.started_at, a.ended_at.unwrap_or(run_end)),
            attributes,
            run_status(a.status, a.error.as_deref()),
        );
        attempt_ids.insert(
            a.number,
            (
                span.span_context.span_id(),
                a.started_at,
                a.ended_at.unwrap_or(run_end),
            ),
        );
        out.push(span);
    }

    // Steps open on their first event and close on a `phase: end` one (or
    // with their attempt).
    let mut open: HashMap<(u32, String), (i64, Ts)> = HashMap::new();
    for e in rec.events {
        let ev = &e.event;
        let Some(&(parent, began, ended)) = attempt_ids.get(&ev.attempt) else {
            continue;
        };
        // A child span stays inside its attempt, whatever the agent's own
        // clock or reported durations say.
        let at = ev.at.min(ended).max(began);
        let data = &ev.data;
        let text = |k: &str| data.get(k).and_then(Value::as_str);
        let num = |k: &str| data.get(k).and_then(Value::as_i64);
        match ev.event_kind() {
            Some(EventKind::Step) => {
                let name = text("name").unwrap_or("?").to_string();
                let key = (ev.attempt, name.clone());
                let ends = matches!(text("phase"), Some("end" | "finish" | "done"));
                if ends {
                    if let Some((seq, start)) = open.remove(&key) {
                        out.push(step_span(&b, parent, seq, &name, (start, at), ev.attempt));
                    }
                } else {
                    open.entry(key).or_insert((e.seq, at));
                }
            }
            Some(EventKind::ModelCall) => {
                let start = (at - num("latency_ms").unwrap_or(0)).max(began);
                let model = text("model").unwrap_or("?").to_string();
                let mut attributes = vec![
                    KeyValue::new("gen_ai.operation.name", "chat"),
                    KeyValue::new("gen_ai.request.model", model.clone()),
                ];
                if let Some(p) = text("provider") {
                    attributes.push(KeyValue::new("gen_ai.system", p.to_string()));
                }
                if let Some(m) = text("response_model") {
                    attributes.push(KeyValue::new("gen_ai.response.model", m.to_string()));
                }
                for (attr, k) in [
                    ("gen_ai.usage.input_tokens", "input_tokens"),
                    ("gen_ai.usage.output_tokens", "output_tokens"),
                ] {
                    if let Some(n) = num(k) {
                        attributes.push(KeyValue::new(attr, n));
                    }
                }
                if let Some(reason) = text("finish_reason") {
                    attributes.push(KeyValue::new(
                        "gen_ai.response.finish_reasons",
                        opentelemetry::Value::Array(
                            vec![opentelemetry::StringValue::from(reason.to_string())].into(),
                        ),
                    ));
                }
                let status = match text("error") {
                    Some(err) => Status::error(err.to_string()),
                    None => Status::Unset,
                };
                let mut span = b.span(
                    &format!("event/{}", e.seq),
                    parent,
                    format!("chat {model}"),
                    (start, at),
                    attributes,
                    status,
                );
                span.span_kind = SpanKind::Client;
                out.push(span);
            }
            Some(EventKind::ToolCall) => {
                let name = text("name").unwrap_or("?").to_string();
                let start = (at - num("duration_ms").unwrap_or(0)).max(began);
                let mut attributes = vec![
                    KeyValue::new("gen_ai.operation.name", "execute_tool"),
                    KeyValue::new("gen_ai.tool.name", name.clone()),
                ];
                if let Some(id) = text("id") {
                    attributes.push(KeyValue::new("gen_ai.tool.call.id", id.to_string()));
                }
                let status = match data.get("ok").and_then(Value::as_bool) {
                    Some(false) => Status::error(format!("tool {name} failed")),
                    _ => Status::Unset,
                };
                out.push(b.span(
                    &format!("event/{}", e.seq),
                    parent,
                    format!("execute_tool {name}"),
                    (start, at),
                    attributes,
                    status,
                ));
            }
            _ => {}
        }
    }
    let mut left: Vec<_> = open.into_iter().collect();
    left.sort_by_key(|(_, (seq, _))| *seq);
    for ((attempt, name), (seq, start)) in left {
        if let Some(&(parent, _, end)) = attempt_ids.get(&attempt) {
            out.push(step_span(&b, parent, seq, &name, (start, end), attempt));
        }
    }
    out
}

fn step_span(
    b: &Builder<'_>,
    parent: SpanId,
    seq: i64,
    name: &str,
    times: (Ts, Ts),
    attempt: u32,
) -> SpanData {
    b.span(
        &format!("event/{seq}"),
        parent,
        format!("step {name}"),
        times,
        vec![
            KeyValue::new("dispatch.step", name.to_string()),
            KeyValue::new("dispatch.attempt", i64::from(attempt)),
        ],
        Status::Unset,
    )
}
