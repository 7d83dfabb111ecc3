//! Every request sent to a provider is recorded, and billed, exactly once.
//!
//! Before a request goes out, a `model_call_sent` event is recorded: its
//! `id`, the model, the call and round it belongs to, and the prompt's
//! estimated tokens. When the call ends, whole or not, its `model_call`
//! event (same `id`) and its `usage` are recorded. A call that never got
//! its `model_call` (the run was stopped or timed out mid-stream, or its
//! helper died) is billed afterwards from its `model_call_sent`: by the
//! attempt that stopped it, by the next attempt before it sends anything
//! ([`unbilled`]), or by whoever ends a run whose helper died. A call lost
//! between its `model_call_sent` and its sending is billed too: a lost
//! call may be over-reported, never left out.
//!
//! The estimate (the call is marked `"estimated": true`), used when the
//! provider reported no usage for a call it began to answer (a 2xx
//! status), or one we stopped waiting for (`TIMEOUT LLM`): the prompt's
//! tokens are the bytes of the request's text (system prompt, messages,
//! tool calls) over 4, the completion's the bytes received over 4, both
//! rounded up ([`estimate_tokens`]). A call whose helper died mid-stream
//! is billed its prompt only: what it had received died with the helper.
//! A call the provider refused with an error status (429, 4xx, 5xx), or
//! that reached no provider (a connection refused), is recorded with no
//! tokens: providers do not bill those.
//!
//! `LIMIT TOKENS` and `LIMIT COST` count estimated calls like the others.

use std::sync::atomic::{AtomicU64, Ordering};

use dispatch_core::agent::Price;
use dispatch_core::event::Usage;
use dispatch_core::{EventKind, RunEvent};
use serde_json::{Value, json};

pub use crate::conversation::estimate_tokens;
use crate::resolve::ResolvedModel;

/// An id for a request about to be sent, unique across attempts and processes.
pub fn new_sent_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n}", std::process::id())
}

/// What a call of `est_in` prompt tokens that received `out_chars`
/// characters is estimated to have cost, with `model`'s price.
pub fn estimate(model: &ResolvedModel, est_in: u64, out_chars: usize) -> (Usage, Option<f64>) {
    let usage = Usage {
        input_tokens: est_in,
        output_tokens: estimate_tokens(out_chars),
        cost_usd: 0.0,
    };
    let cost = model
        .price
        .as_ref()
        .map(|p| p.cost(usage.input_tokens, usage.output_tokens));
    (usage, cost)
}

/// The run's `usage` event for a call of `model`.
pub fn usage_event(model: &str, u: Usage, cost: Option<f64>, estimated: bool) -> Value {
    let mut e =
        json!({"model": model, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens});
    if let Some(c) = cost {
        e["cost_usd"] = json!(c);
    }
    if estimated {
        e["estimated"] = json!(true);
    }
    e
}

/// Writes an estimated bill into a call's `model_call` event.
pub fn mark_estimated(event: &mut Value, u: Usage, cost: Option<f64>) {
    event["input_tokens"] = json!(u.input_tokens);
    event["output_tokens"] = json!(u.output_tokens);
    event["cost_usd"] = json!(cost);
    event["estimated"] = json!(true);
}

/// The `model_call` and `usage` events that bill a call sent as `sent` (a
/// `model_call_sent` event's data) that never ended on its own: it was
/// stopped (`finish` "stopped"), timed out, or lost with its attempt
/// ("lost"), after `out_chars` characters of answer. The price is the one
/// `sent` carries, else that of its model among `models` (none known: the
/// cost is unknown, as for any unpriced model).
pub fn unfinished(
    sent: &Value,
    out_chars: usize,
    finish: &str,
    error: &str,
    models: &[ResolvedModel],
) -> Vec<RunEvent> {
    let name = sent["model"].as_str().unwrap_or("?");
    let est_in = sent["input_tokens"].as_u64().unwrap_or(0);
    let usage = Usage {
        input_tokens: est_in,
        output_tokens: estimate_tokens(out_chars),
        cost_usd: 0.0,
    };
    let price = serde_json::from_value::<Price>(sent["price"].clone())
        .ok()
        .or_else(|| {
            models
                .iter()
                .find(|m| m.model.name == name)
                .and_then(|m| m.price.clone())
        });
    let cost = price.map(|p| p.cost(usage.input_tokens, usage.output_tokens));
    let mut event = json!({
        "id": sent["id"], "model": name, "provider": sent["provider"],
        "base_url": sent["base_url"], "call": sent["call"], "round": sent["round"],
        "retry": sent["retry"], "fallback": sent["fallback"],
        "finish_reason": finish, "error": error,
    });
    mark_estimated(&mut event, usage, cost);
    vec![
        RunEvent::ModelCall(event),
        RunEvent::Usage(usage_event(name, usage, cost, true)),
    ]
}

/// The `model_call_sent` events (attempt, data) among a run's `events`
/// (type, attempt, data) that have no `model_call` with their id: calls
/// sent and never recorded.
pub fn unbilled<'a>(
    events: impl IntoIterator<Item = (&'a str, u32, &'a Value)>,
) -> Vec<(u32, Value)> {
    let mut sent = Vec::new();
    let mut recorded = std::collections::HashSet::new();
    for (kind, attempt, data) in events {
        match (EventKind::parse(kind), data["id"].as_str()) {
            (Some(EventKind::ModelCallSent), Some(_)) => sent.push((attempt, data.clone())),
            (Some(EventKind::ModelCall), Some(id)) => {
                recorded.insert(id.to_string());
            }
            _ => {}
        }
    }
    sent.retain(|(_, d)| !d["id"].as_str().is_some_and(|id| recorded.contains(id)));
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_call_without_its_model_call_is_unbilled_once_billed_it_is_not() {
        let a = json!({"id": "a", "model": "m", "input_tokens": 10, "call": 1});
        let b = json!({"id": "b", "model": "m", "input_tokens": 20, "call": 2});
        let done = json!({"id": "a", "input_tokens": 10});
        let events = [
            ("model_call_sent", 1, &a),
            ("model_call", 1, &done),
            ("model_call_sent", 1, &b),
        ];
        let left = unbilled(events);
        assert_eq!(left, vec![(1, b.clone())]);
        let bill = unfinished(&b, 9, "lost", "gone", &[]);
        assert_eq!(bill[0].kind(), Some(EventKind::ModelCall));
        assert_eq!(bill[0].data()["id"], "b");
        assert_eq!(bill[0].data()["input_tokens"], 20);
        assert_eq!(bill[0].data()["output_tokens"], 3, "9 characters: 3 tokens");
        assert_eq!(bill[0].data()["estimated"], true);
        assert!(
            bill[0].data()["cost_usd"].is_null(),
            "no price: unknown cost"
        );
        assert_eq!(bill[1].kind(), Some(EventKind::Usage));
        let mut priced = b.clone();
        priced["price"] =
            json!({"model": "m", "input_per_mtok": 1_000_000.0, "output_per_mtok": 0.0});
        let bill = unfinished(&priced, 0, "lost", "gone", &[]);
        assert_eq!(
            bill[0].data()["cost_usd"],
            20.0,
            "the price the sent call carried"
        );
        let billed = [
            ("model_call_sent", 1, &b),
            ("model_call", 2, bill[0].data()),
        ];
        assert!(unbilled(billed).is_empty());
    }

    #[test]
    fn sent_ids_differ() {
        assert_ne!(new_sent_id(), new_sent_id());
    }
}
