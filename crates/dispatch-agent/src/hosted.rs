//! Tools the model's provider runs inside a call (`TOOL BUILTIN
//! web_search`): nothing runs here; each search the answer reports is
//! recorded as a `tool_call` event `by` the provider, `kind: hosted`, after
//! the call's `model_call` — so `inspect-run`, the dashboard and evals see
//! what was searched and which pages came back.

use dispatch_core::RunEvent;
use serde_json::json;

use crate::provider::{ModelResponse, ProviderKind};

/// What a provider charges per web search, in USD, added to a priced
/// call's cost (list prices when this was written: OpenAI and Anthropic
/// $10 per 1,000 searches; Gemini $35 per 1,000 grounded prompts, charged
/// once per call whatever its number of queries).
pub fn search_fee(provider: ProviderKind, searches: usize) -> f64 {
    match provider {
        _ if searches == 0 => 0.0,
        ProviderKind::Gemini => 0.035,
        _ => 0.01 * searches as f64,
    }
}

/// The `tool_call` events of the searches of `response`, made by
/// `provider` in round `round`; ids are the model call's id and a number.
pub fn search_events(
    response: &ModelResponse,
    provider: ProviderKind,
    call_id: &str,
    round: u64,
) -> Vec<RunEvent> {
    response
        .searches
        .iter()
        .enumerate()
        .map(|(i, s)| {
            RunEvent::ToolCall(json!({
                "name": "web_search", "id": format!("{call_id}-search-{i}"),
                "input": {"query": s.query}, "output": s.sources, "ok": true,
                "duration_ms": 0, "round": round, "by": provider.as_str(), "kind": "hosted",
            }))
        })
        .collect()
}
