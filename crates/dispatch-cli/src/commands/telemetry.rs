//! Telemetry of a run, derived from its event log: the timeline of steps
//! with durations, tool calls, usage by model and by attempt.

use std::collections::BTreeMap;

use dispatch_core::time::human_duration;
use dispatch_store::{Attempt, Event};
use serde_json::{Value, json};

use crate::output::cost_text;

/// `{"timeline", "tool_calls", "usage_by_model", "attempts"}` for `inspect-run`.
pub fn build(events: &[Event], attempts: &[Attempt]) -> Value {
    let mut steps: Vec<Value> = Vec::new();
    let mut tools = Vec::new();
    let mut by_model: BTreeMap<String, Value> = BTreeMap::new();
    let mut by_attempt: BTreeMap<u32, (u64, u64, f64)> = BTreeMap::new();
    let close = |s: &mut Value, at: i64| {
        if s["ended_at"].is_null() {
            s["ended_at"] = json!(at);
            s["duration_ms"] = json!(at - s["started_at"].as_i64().unwrap_or(at));
        }
    };
    for e in events {
        let (kind, d, at, attempt) = (&e.event.kind, &e.event.data, e.event.at, e.event.attempt);
        match kind.as_str() {
            "step" => {
                let name = d["name"].as_str().unwrap_or("?");
                let ending = matches!(d["phase"].as_str(), Some("end" | "finish" | "done"));
                let open = steps
                    .iter_mut()
                    .rev()
                    .find(|s| s["attempt"] == json!(attempt) && s["ended_at"].is_null());
                match (ending, open) {
                    (true, Some(s)) if s["name"] == json!(name) => close(s, at),
                    (true, _) => {}
                    (false, open) => {
                        // A new step ends the one before it.
                        if let Some(s) = open {
                            close(s, at);
                        }
                        steps.push(json!({"attempt": attempt, "name": name, "started_at": at,
                                          "ended_at": null, "duration_ms": null}));
                    }
                }
            }
            "tool_call" => {
                let mut call = json!({
                    "attempt": attempt, "at": at, "name": d["name"], "ok": d["ok"],
                    "duration_ms": d["duration_ms"], "kind": d["kind"], "input": d["input"],
                    "output": d["output"], "bytes": d["bytes"], "truncated": d["truncated"],
                    "approval": d["approval"],
                });
                // An approver's edit: `input` ran; the model asked for this.
                for k in ["requested_input", "edited_by"] {
                    if let Some(v) = d.get(k) {
                        call[k] = v.clone();
                    }
                }
                tools.push(call);
            }
            "usage" => {
                let model = d["model"].as_str().unwrap_or("unknown").to_string();
                let n = |k: &str| d[k].as_u64().unwrap_or(0);
                let cost = d["cost_usd"].as_f64().unwrap_or(0.0);
                let m = by_model.entry(model).or_insert_with(
                    || json!({"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "events": 0}),
                );
                for (k, v) in [
                    ("input_tokens", n("input_tokens")),
                    ("output_tokens", n("output_tokens")),
                    ("events", 1),
                ] {
                    m[k] = json!(m[k].as_u64().unwrap_or(0) + v);
                }
                m["cost_usd"] = json!(m["cost_usd"].as_f64().unwrap_or(0.0) + cost);
                let a = by_attempt.entry(attempt).or_default();
                a.0 += n("input_tokens");
                a.1 += n("output_tokens");
                a.2 += cost;
            }
            _ => {}
        }
    }
    // Steps still open when their attempt ended end with it.
    for s in steps.iter_mut() {
        let n = s["attempt"].as_u64().unwrap_or(0) as u32;
        if let Some(end) = attempts
            .iter()
            .find(|a| a.number == n)
            .and_then(|a| a.ended_at)
        {
            close(s, end);
        }
    }
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|a| {
            let (i, o, c) = by_attempt.get(&a.number).copied().unwrap_or_default();
            let mut v = json!(a);
            v["usage"] = json!({"input_tokens": i, "output_tokens": o, "cost_usd": c});
            v["duration_ms"] = json!(a.ended_at.map(|e| e - a.started_at));
            v["resources"] = super::inspect_resources::of_attempt(events, a.number);
            v
        })
        .collect();
    json!({
        "timeline": steps,
        "tool_calls": tools,
        "usage_by_model": by_model,
        "attempts": attempts,
    })
}

/// The human-readable telemetry sections of `inspect-run`.
pub fn print_human(d: &Value) {
    if let Some(steps) = d["timeline"].as_array().filter(|s| !s.is_empty()) {
        println!("Timeline:");
        for s in steps {
            let dur = s["duration_ms"]
                .as_i64()
                .map_or_else(|| "running".into(), human_duration);
            println!(
                "  #{} {:<20} {dur}",
                s["attempt"],
                s["name"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(tools) = d["tool_calls"].as_array().filter(|t| !t.is_empty()) {
        println!("Tool calls:");
        for t in tools {
            let ok = match t["ok"].as_bool() {
                Some(true) => "ok",
                Some(false) => "failed",
                None => "-",
            };
            let dur = t["duration_ms"]
                .as_i64()
                .map_or_else(|| "-".into(), human_duration);
            let kind = t["kind"]
                .as_str()
                .map(|k| format!(" {k}"))
                .unwrap_or_default();
            println!(
                "  #{} {:<20} {ok:<6} {dur}{kind}",
                t["attempt"],
                t["name"].as_str().unwrap_or("?")
            );
            if !t["input"].is_null() {
                println!(
                    "      input:  {}",
                    dispatch_core::event::shorten(&t["input"].to_string(), 160)
                );
            }
            if let Some(by) = t["edited_by"].as_object() {
                println!(
                    "      asked:  {}",
                    dispatch_core::event::shorten(&t["requested_input"].to_string(), 160)
                );
                let when = by
                    .get("at")
                    .and_then(Value::as_i64)
                    .and_then(dispatch_core::time::format_rfc3339)
                    .map(|at| format!(", {at}"))
                    .unwrap_or_default();
                println!(
                    "      edited by {} (approval {}{when}): the input above is what ran",
                    by.get("by").and_then(Value::as_str).unwrap_or("?"),
                    by.get("approval").and_then(Value::as_str).unwrap_or("?"),
                );
            }
            if let Some(out) = t["output"].as_str() {
                let out = out.replace('\n', " ");
                println!("      output: {}", dispatch_core::event::shorten(&out, 160));
            }
        }
    }
    if let Some(models) = d["usage_by_model"].as_object().filter(|m| !m.is_empty()) {
        println!("Usage by model:");
        for (model, u) in models {
            println!(
                "  {model:<20} {} in / {} out  {}",
                u["input_tokens"],
                u["output_tokens"],
                cost_text(u["cost_usd"].as_f64().unwrap_or(0.0))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use dispatch_core::NewEvent;
    use serde_json::json;

    use super::*;

    fn ev(seq: i64, attempt: u32, at: i64, data: Value) -> Event {
        Event {
            seq,
            run_id: "0000000000000000000000000000002a".parse().expect("an id"),
            event: NewEvent::new(
                data["type"].as_str().expect("a type").to_string(),
                attempt,
                at,
                data,
            ),
        }
    }

    #[test]
    fn steps_pair_up_and_open_ones_close_with_their_attempt() {
        let events = [
            ev(1, 1, 100, json!({"type": "step", "name": "plan"})),
            ev(2, 1, 150, json!({"type": "step", "name": "act"})),
            ev(
                3,
                1,
                160,
                json!({"type": "usage", "model": "m", "input_tokens": 5}),
            ),
            ev(
                4,
                2,
                300,
                json!({"type": "step", "name": "act", "phase": "start"}),
            ),
            ev(
                5,
                2,
                340,
                json!({"type": "step", "name": "act", "phase": "end"}),
            ),
        ];
        let attempts = [
            Attempt {
                number: 1,
                started_at: 90,
                ended_at: Some(200),
                status: Some(dispatch_core::Status::Failed),
                exit_code: Some(1),
                error: None,
                worker: None,
            },
            Attempt {
                number: 2,
                started_at: 290,
                ended_at: None,
                status: None,
                exit_code: None,
                error: None,
                worker: None,
            },
        ];
        let t = build(&events, &attempts);
        let durations: Vec<Value> = t["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .map(|s| s["duration_ms"].clone())
            .collect();
        // plan ends when act starts; act of attempt 1 ends with the attempt.
        assert_eq!(durations, [json!(50), json!(50), json!(40)]);
        assert_eq!(t["attempts"][0]["usage"]["input_tokens"], 5);
        assert_eq!(t["attempts"][1]["duration_ms"], Value::Null);
        assert_eq!(t["usage_by_model"]["m"]["events"], 1);
    }
}
