//! One model call, or one tool call, for a guest that runs its own loop (a
//! WASM agent's component): the same budgets, retries, fallbacks, billing,
//! rate limits and events (`model_call_sent`, `model_call`, `usage`,
//! `tool_call`) as the model loop's, one step at a time. The guest's
//! conversation is kept by the caller ([`Conversation`]); a step that ends
//! the run (a budget, a refused request) says why as the [`LoopEnd`] the
//! loop would have ended with.

use dispatch_core::RunEvent;
use dispatch_core::event::Usage;
use serde_json::json;

use crate::agent_loop::{LoopConfig, LoopEnd, Sink, Tools, call_chain, over_budget};
use crate::conversation::{Conversation, estimate_tokens};
use crate::provider::{FinishReason, Message, ModelResponse, ToolCall};
use crate::round::{DoneCall, RoundEnd, run_round};
use crate::{billing, resolve::ResolvedModel};

/// Calls the models on `conv` offering `tools`' specs; the answer is added
/// to `conv`, its spending to `used`.
pub async fn complete(
    cfg: &LoopConfig,
    conv: &mut Conversation,
    tools: &dyn Tools,
    sink: &mut dyn Sink,
    client: &reqwest::Client,
    used: &mut Usage,
) -> Result<(ResolvedModel, ModelResponse), LoopEnd> {
    let est_in = estimate_tokens(conv.chars());
    if let Some(reason) = over_budget(cfg, used, est_in, 0, cfg.models.first()) {
        return Err(LoopEnd::Budget(format!(
            "budget_exceeded: {reason} (stopped before the next model call)"
        )));
    }
    if let Some(max) = cfg.max_iterations
        && conv.calls >= max
    {
        return Err(LoopEnd::ToolRounds(format!(
            "iterations_exceeded: the guest asked for model call {} of {max} (LIMIT ITERATIONS {max})",
            conv.calls + 1
        )));
    }
    let call = call_chain(cfg, conv, tools, sink, client, used, est_in).await?;
    conv.calls += 1;
    let mut said = Message::assistant(call.response.text.clone(), call.response.tool_calls.clone());
    said.thinking = call.response.thinking.clone();
    conv.messages.push(said);
    let mut event = call.event;
    event["call"] = json!(conv.calls);
    let name = &call.model.model.name;
    let searched = crate::hosted::search_events(
        &call.response,
        call.model.model.provider,
        event["id"].as_str().unwrap_or_default(),
        conv.rounds + 1,
    );
    let mut events = vec![
        RunEvent::ModelCall(event),
        RunEvent::Usage(billing::usage_event(
            name,
            call.usage,
            call.cost,
            call.estimated,
        )),
    ];
    events.extend(searched);
    let mut failed = None;
    if call.response.finish_reason == FinishReason::Length {
        let (warning, fail) =
            crate::truncation::truncated(name, cfg.max_output_tokens, cfg.allow_truncation);
        events.push(RunEvent::Warning(warning));
        failed = fail;
    }
    if let Err(e) = sink.record(events).await {
        return Err(LoopEnd::Failed {
            reason: format!("could not record model call {}: {e}", conv.calls),
            retryable: true,
        });
    }
    if let Some(reason) = failed {
        return Err(LoopEnd::Failed {
            reason,
            retryable: false,
        });
    }
    if let Some(reason) = over_budget(cfg, used, 0, 0, Some(&call.model)) {
        return Err(LoopEnd::Budget(format!("budget_exceeded: {reason}")));
    }
    Ok((call.model, call.response))
}

/// Runs one tool call as a round of its own (LIMIT TOOL_ROUNDS counts it);
/// its `tool_call` event is recorded. A call that waits for an approval
/// ends as [`LoopEnd::Suspended`].
pub async fn tool(
    cfg: &LoopConfig,
    conv: &mut Conversation,
    call: ToolCall,
    tools: &dyn Tools,
    sink: &mut dyn Sink,
) -> Result<DoneCall, LoopEnd> {
    if conv.rounds >= cfg.max_tool_rounds {
        return Err(LoopEnd::ToolRounds(format!(
            "tool_rounds_exceeded: the guest called a tool again after {} (LIMIT TOOL_ROUNDS {})",
            conv.rounds, cfg.max_tool_rounds
        )));
    }
    let round = conv.rounds + 1;
    match run_round(conv, round, std::slice::from_ref(&call), tools, sink).await {
        RoundEnd::Suspended { pending, .. } => Err(LoopEnd::Suspended(pending)),
        RoundEnd::Done { results, events } => {
            conv.rounds = round;
            conv.done.clear();
            if let Err(e) = sink.record(events).await {
                return Err(LoopEnd::Failed {
                    reason: format!("could not record tool call {}: {e}", call.name),
                    retryable: true,
                });
            }
            results.into_iter().next().ok_or_else(|| LoopEnd::Failed {
                reason: format!("tool call {} gave no result", call.name),
                retryable: false,
            })
        }
    }
}
