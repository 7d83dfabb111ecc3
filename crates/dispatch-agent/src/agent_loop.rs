//! The model loop: call the model, run the tools it asks for, repeat, until
//! it answers. Durable step by step, through the [`Sink`] (every record
//! awaited): each request is recorded before it is sent and billed when it
//! ends ([`crate::billing`]); an answer with tool calls is checkpointed
//! before its tools run, and each round's tool calls and conversation after
//! them. A loop started from a checkpoint never repeats a completed call,
//! model or tool.
//!
//! Per call: budgets are checked before it (estimated input) and while it
//! streams (estimated output); retryable errors (429 honouring
//! `Retry-After`, 5xx, connection errors, `TIMEOUT LLM`) are retried with
//! exponential backoff, then the next FALLBACK model is tried with the whole
//! conversation; a refused request (400/401/403/404) fails the attempt as
//! not retryable, quoting the provider.

use std::time::{Duration, Instant};

use dispatch_core::RunEvent;
use dispatch_core::event::Usage;
use serde_json::{Value, json};

use crate::billing;
use crate::conversation::{Conversation, estimate_tokens};
use crate::prompt::output_of;
use crate::provider::{
    Delta, Exchange, FinishReason, Flow, Message, ModelRequest, ModelResponse, ProviderError,
    RecordRequest, ToolCall, ToolSpec,
};
use crate::resolve::{ResolvedModel, provider_for};
use crate::round::{PendingApproval, RoundEnd, run_round};

/// How many tool rounds a run may do when the Agentfile sets no LIMIT TOOL_ROUNDS.
pub const DEFAULT_TOOL_ROUNDS: u64 = 25;
/// How long one call may take when the Agentfile sets no TIMEOUT LLM.
pub const DEFAULT_LLM_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of one call on the same model before the next model is tried.
pub const CALL_RETRIES: u32 = 2;
/// The longest a `Retry-After` is honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Where the loop's results go: the runtime's event stream and log.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Generated text as it arrives (the log, live streams); not stored per token.
    fn delta(&mut self, text: &str);
    /// `bytes` more of the answer in flight arrived (text or tool
    /// arguments): what bills a call stopped mid-stream.
    fn streamed(&mut self, _bytes: usize) {}
    /// Appends events (type, data) to the run, all at once; awaited.
    async fn record(&mut self, events: Vec<RunEvent>) -> Result<(), String>;
    /// Stores a request or response body content-addressed; its sha256.
    fn blob(&mut self, bytes: &[u8]) -> Option<String>;
    /// What stores a request body as [`Sink::blob`] does, as the request
    /// goes out (a call waiting on its answer then does not hold the text
    /// it sent); `None`: the loop stores it with `blob` after the answer.
    fn record_request(&mut self) -> Option<RecordRequest> {
        None
    }
    /// Before a call of about `est_tokens` to `model` of `provider`: waits
    /// until the rate limits that apply admit it (the runtime records the
    /// wait). The answer is settled after the call ([`Sink::settle`]).
    async fn admit(&mut self, _model: &str, _provider: &str, _est_tokens: u64) -> Admission {
        Admission::default()
    }
    /// Before each call: why the run may not call its model any more (its
    /// project is over a budget of its quota), if so; the run then ends
    /// `budget_exceeded`, as at its own `LIMIT COST`.
    async fn over_quota(&mut self) -> Option<String> {
        None
    }
    /// After the call `admission` admitted: the tokens it really used.
    async fn settle(&mut self, _admission: Admission, _tokens: u64) {}
    /// The provider answered 429: nothing more goes to `model` of `provider`
    /// for `wait` (its `retry-after`, or the loop's backoff).
    async fn rate_limited(&mut self, _model: &str, _provider: &str, _wait: Duration) {}
}

/// What a rate limiter admitted (opaque to the loop): handed back to
/// [`Sink::settle`] after the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission(pub Vec<i64>);

/// What one tool call gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolOutcome {
    /// What the model is told.
    pub text: String,
    /// The call failed (the model is told so).
    pub is_error: bool,
    /// More fields for the call's `tool_call` event (kind, bytes, …).
    pub meta: serde_json::Map<String, Value>,
    /// A limit was reached: the run ends with this reason after this round.
    pub stop: Option<String>,
    /// The call waits for a decision not taken yet: the round suspends
    /// (see [`crate::round`]).
    pub suspend: Option<PendingApproval>,
    /// Told to the model before `text` (not part of the tool's output): an
    /// approver changed the call's input, and to what.
    pub note: Option<String>,
}

impl ToolOutcome {
    pub fn ok(text: impl Into<String>) -> Self {
        ToolOutcome {
            text: text.into(),
            ..ToolOutcome::default()
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        ToolOutcome {
            text: text.into(),
            is_error: true,
            ..ToolOutcome::default()
        }
    }
}

/// The tools a model may call.
#[async_trait::async_trait]
pub trait Tools: Send + Sync {
    /// The tools offered to the model, lent to each call's request.
    fn specs(&self) -> std::borrow::Cow<'_, [ToolSpec]>;
    /// Runs one call (calls of one response may run at once).
    async fn call(&self, call: &ToolCall) -> ToolOutcome;
    /// Says which round the next calls belong to (approvals are keyed by
    /// the round and the call's id, so a resumed round finds its own).
    fn begin_round(&self, _round: u64) {}
    /// Whether calls offer the provider's own web search (`TOOL BUILTIN
    /// web_search`, a hosted tool: see [`crate::hosted`]).
    fn web_search(&self) -> bool {
        false
    }
}

/// An agent with no tools: every call is answered with an error the model can read.
#[derive(Debug, Default)]
pub struct NoTools;

#[async_trait::async_trait]
impl Tools for NoTools {
    fn specs(&self) -> std::borrow::Cow<'_, [ToolSpec]> {
        std::borrow::Cow::Borrowed(&[])
    }

    async fn call(&self, call: &ToolCall) -> ToolOutcome {
        ToolOutcome::error(format!(
            "error: there is no tool named `{}`; this agent has no tools. Answer without tools.",
            call.name
        ))
    }
}

/// What the loop runs with.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// The primary model, then the fallbacks.
    pub models: Vec<ResolvedModel>,
    pub llm_timeout: Duration,
    pub max_tool_rounds: u64,
    /// `LIMIT ITERATIONS`: the most model calls in one run; a model that
    /// asks for tools on the last one ends the run.
    pub max_iterations: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// `REASONING` (or the run's `--reasoning-effort`), sent with every call.
    pub reasoning: Option<crate::provider::Reasoning>,
    /// An answer cut at the output limit is accepted (with a warning)
    /// instead of failing the run (see [`crate::truncation`]).
    pub allow_truncation: bool,
    pub max_context_tokens: Option<u64>,
    /// The run's hard budgets (`LIMIT TOKENS`, `LIMIT COST`).
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    /// What the run used before this loop started (earlier attempts, earlier turns).
    pub used: Usage,
    /// First backoff between retries of a call (doubles each time).
    pub backoff: Duration,
}

/// How the loop ended.
#[derive(Clone, Debug, PartialEq)]
pub enum LoopEnd {
    /// The model answered: its last text, and the run's output.
    Answered { text: String, output: Value },
    /// The attempt failed; `retryable` says whether another attempt may help.
    Failed { reason: String, retryable: bool },
    /// A hard budget stopped it: `budget_exceeded: …`.
    Budget(String),
    /// The model kept calling tools past LIMIT TOOL_ROUNDS.
    ToolRounds(String),
    /// The run's project is over a hard budget of its quota
    /// (`budget_exceeded: …`), seen before a model call, which was not
    /// made: the conversation stands as last checkpointed, so the run may
    /// fail or pause (`ON BUDGET pause`) and go on once the quota allows.
    OverQuota(String),
    /// A tool call waits for a decision: the conversation is checkpointed
    /// (with the round's completed calls) and the attempt may end; the
    /// next one resumes the round without calling the model again.
    Suspended(PendingApproval),
}

/// Runs the loop on `conv` (fresh, resumed from a checkpoint, or continuing a session).
pub async fn run_loop(
    cfg: &LoopConfig,
    conv: &mut Conversation,
    tools: &dyn Tools,
    sink: &mut dyn Sink,
    client: &reqwest::Client,
) -> LoopEnd {
    let mut used = cfg.used;
    if let Some(answer) = conv.answered() {
        // Resumed after the answer was checkpointed: nothing to call again.
        let text = answer.content.clone();
        return LoopEnd::Answered {
            output: output_of(&text),
            text,
        };
    }
    loop {
        if let Some(limit) = cfg.max_context_tokens {
            let dropped = conv.compact(limit);
            if dropped > 0 {
                let data = json!({"message": format!("conversation compacted: {dropped} oldest messages dropped to fit LIMIT CONTEXT_TOKENS {limit}"), "dropped": dropped});
                let _ = sink.record(vec![RunEvent::Warning(data)]).await;
            }
        }
        // A round whose model call was saved but whose tools had not run
        // (the attempt ended while a call waited for a decision): its tools
        // run now, and the model is not called again.
        let resumed = pending_tool_calls(conv);
        let (tool_calls, text, model, mut events) = match resumed {
            Some(calls) => (calls, String::new(), None, Vec::new()),
            None => {
                let est_in = estimate_tokens(conv.chars());
                if let Some(reason) = over_budget(cfg, &used, est_in, 0, cfg.models.first()) {
                    return LoopEnd::Budget(format!(
                        "budget_exceeded: {reason} (stopped before the next model call)"
                    ));
                }
                let call = match call_chain(cfg, conv, tools, sink, client, &mut used, est_in).await
                {
                    Ok(call) => call,
                    Err(end) => return end,
                };
                let Call {
                    model,
                    response,
                    mut event,
                    usage,
                    cost,
                    estimated,
                } = call;
                conv.calls += 1;
                let mut said =
                    Message::assistant(response.text.clone(), response.tool_calls.clone());
                said.thinking = response.thinking.clone();
                // Exactly: the conversation is held while the model works.
                conv.messages.reserve_exact(1);
                conv.messages.push(said);
                event["call"] = json!(conv.calls);
                let searched = crate::hosted::search_events(
                    &response,
                    model.model.provider,
                    event["id"].as_str().unwrap_or_default(),
                    conv.rounds + 1,
                );
                let mut events = vec![
                    RunEvent::ModelCall(event),
                    RunEvent::Usage(billing::usage_event(
                        &model.model.name,
                        usage,
                        cost,
                        estimated,
                    )),
                ];
                events.extend(searched);
                if response.finish_reason == FinishReason::Length {
                    let (warning, fail) = crate::truncation::truncated(
                        &model.model.name,
                        cfg.max_output_tokens,
                        cfg.allow_truncation,
                    );
                    events.push(RunEvent::Warning(warning));
                    if let Some(reason) = fail {
                        let _ = sink.record(events).await;
                        return LoopEnd::Failed {
                            reason,
                            retryable: false,
                        };
                    }
                }
                let calls = response.tool_calls;
                if let Some(max) = cfg.max_iterations
                    && !calls.is_empty()
                    && conv.rounds + 1 >= max
                {
                    let _ = sink.record(events).await;
                    return LoopEnd::ToolRounds(format!(
                        "iterations_exceeded: the model asked for tools again on model call {} of {max} (LIMIT ITERATIONS {max})",
                        conv.rounds + 1
                    ));
                }
                if !calls.is_empty() && conv.rounds >= cfg.max_tool_rounds {
                    let _ = sink.record(events).await;
                    return LoopEnd::ToolRounds(format!(
                        "tool_rounds_exceeded: the model asked for tools again after {} rounds (LIMIT TOOL_ROUNDS {})",
                        conv.rounds, cfg.max_tool_rounds
                    ));
                }
                if !calls.is_empty() {
                    // The model's answer is saved before its tools run: a new
                    // attempt (after a crash, or a wait for a decision) runs
                    // the calls not done and never asks the model again.
                    let step = format!("round-{}-tools", conv.rounds + 1);
                    events.push(RunEvent::Checkpoint(conv.checkpoint(&step)));
                    if let Err(e) = sink.record(std::mem::take(&mut events)).await {
                        return LoopEnd::Failed {
                            reason: format!("could not record round {}: {e}", conv.calls),
                            retryable: true,
                        };
                    }
                    conv.mark_saved();
                }
                (calls, response.text, Some(model), events)
            }
        };
        let wants_tools = !tool_calls.is_empty();
        let mut stop = None;
        if wants_tools {
            let round = conv.rounds + 1;
            match run_round(conv, round, &tool_calls, tools, sink).await {
                RoundEnd::Suspended {
                    pending,
                    events: done,
                    state,
                } => {
                    // The round is saved as not started, with the calls
                    // that completed; the next attempt runs the rest.
                    events.extend(done);
                    let step = format!("round-{round}-wait");
                    events.push(RunEvent::Checkpoint(state.checkpoint(&step)));
                    if let Err(e) = sink.record(events).await {
                        return LoopEnd::Failed {
                            reason: format!("could not record round {round}: {e}"),
                            retryable: true,
                        };
                    }
                    return LoopEnd::Suspended(pending);
                }
                RoundEnd::Done {
                    results,
                    events: ran,
                } => {
                    conv.rounds = round;
                    conv.done.clear();
                    events.extend(ran);
                    // Answered in the order the model gave the calls.
                    conv.messages.reserve_exact(results.len());
                    for r in results {
                        stop = stop.or(r.stop);
                        conv.messages
                            .push(Message::tool_result(r.id, r.text, r.is_error));
                    }
                }
            }
        }
        let step = if wants_tools {
            format!("round-{}", conv.rounds)
        } else {
            "answer".to_string()
        };
        events.push(RunEvent::Checkpoint(conv.checkpoint(&step)));
        if let Err(e) = sink.record(events).await {
            return LoopEnd::Failed {
                reason: format!("could not record round {}: {e}", conv.calls),
                retryable: true,
            };
        }
        conv.mark_saved();
        if let Some(reason) = over_budget(cfg, &used, 0, 0, model.as_ref()) {
            return LoopEnd::Budget(format!("budget_exceeded: {reason}"));
        }
        if let Some(reason) = stop {
            return LoopEnd::ToolRounds(reason);
        }
        if !wants_tools {
            return LoopEnd::Answered {
                output: output_of(&text),
                text,
            };
        }
    }
}

/// The tool calls of the conversation's last message when it is an
/// assistant's whose calls have no results yet.
fn pending_tool_calls(conv: &Conversation) -> Option<Vec<ToolCall>> {
    let last = conv.messages.last()?;
    (last.role == crate::provider::Role::Assistant && !last.tool_calls.is_empty())
        .then(|| last.tool_calls.clone())
}

/// One completed call.
pub(crate) struct Call {
    pub(crate) model: ResolvedModel,
    pub(crate) response: ModelResponse,
    pub(crate) event: Value,
    pub(crate) usage: Usage,
    pub(crate) cost: Option<f64>,
    /// The provider reported no usage: `usage` is estimated.
    pub(crate) estimated: bool,
}

/// Why spending `extra_in` more input and `extra_out` more output tokens would
/// cross a hard budget (`model`'s price for cost).
pub(crate) fn over_budget(
    cfg: &LoopConfig,
    used: &Usage,
    extra_in: u64,
    extra_out: u64,
    model: Option<&ResolvedModel>,
) -> Option<String> {
    let tokens = used.total_tokens() + extra_in + extra_out;
    if let Some(max) = cfg.max_tokens
        && tokens > max
    {
        let pending = if extra_in + extra_out > 0 {
            format!(" (about {} more)", extra_in + extra_out)
        } else {
            String::new()
        };
        return Some(format!("{tokens} tokens{pending}, limit {max}"));
    }
    if let (Some(max), Some(price)) = (cfg.max_cost_usd, model.and_then(|m| m.price.as_ref())) {
        let cost = used.cost_usd + price.cost(extra_in, extra_out);
        if cost > max {
            return Some(format!("cost ${cost:.4} exceeds limit ${max:.4}"));
        }
    }
    None
}

/// Calls the models in order until one answers. Every request sent is
/// recorded first (`model_call_sent`), then billed once it ends, into
/// `used` too (see [`crate::billing`]).
pub(crate) async fn call_chain(
    cfg: &LoopConfig,
    conv: &Conversation,
    tools: &dyn Tools,
    sink: &mut dyn Sink,
    client: &reqwest::Client,
    used: &mut Usage,
    est_in: u64,
) -> Result<Call, LoopEnd> {
    let mut last_error = String::from("no model was called");
    for (mi, m) in cfg.models.iter().enumerate() {
        let provider = provider_for(m, client);
        let req = ModelRequest {
            model: m.model.name.clone(),
            system: std::borrow::Cow::Borrowed(&conv.system),
            messages: std::borrow::Cow::Borrowed(&conv.messages),
            tools: tools.specs(),
            max_output_tokens: cfg.max_output_tokens,
            reasoning: cfg.reasoning,
            web_search: tools.web_search(),
        };
        let mut backoff = cfg.backoff;
        for retry in 0..=CALL_RETRIES {
            if (mi > 0 || retry > 0)
                && let Some(reason) = over_budget(cfg, used, est_in, 0, Some(m))
            {
                return Err(LoopEnd::Budget(format!(
                    "budget_exceeded: {reason} (stopped before the next model call)"
                )));
            }
            if let Some(reason) = sink.over_quota().await {
                return Err(LoopEnd::OverQuota(format!(
                    "budget_exceeded: {reason} (stopped before the next model call)"
                )));
            }
            let admission = sink
                .admit(&m.model.name, m.model.provider.as_str(), est_in)
                .await;
            // Recorded before it goes out: a call cut short by a stop or a
            // crash is still billed (see `crate::billing`).
            let id = billing::new_sent_id();
            let sent = json!({
                "id": id, "model": m.model.name, "provider": m.model.provider.as_str(),
                "base_url": m.model.endpoint(), "call": conv.calls + 1, "round": conv.rounds + 1,
                "retry": retry, "fallback": mi > 0, "input_tokens": est_in, "price": m.price,
            });
            if let Err(e) = sink.record(vec![RunEvent::ModelCallSent(sent)]).await {
                sink.settle(admission, 0).await;
                return Err(LoopEnd::Failed {
                    reason: format!(
                        "could not record model call {} before sending it: {e}",
                        conv.calls + 1
                    ),
                    retryable: true,
                });
            }
            let mut ex = Exchange {
                record: sink.record_request(),
                ..Exchange::default()
            };
            let started = Instant::now();
            let mut out_chars = 0usize;
            let mut budget_hit = None;
            let mut on_delta = |d: Delta<'_>| {
                let piece = match d {
                    Delta::Text(t) => {
                        sink.delta(t);
                        t
                    }
                    Delta::ToolArguments(a) => a,
                };
                out_chars += piece.len();
                sink.streamed(piece.len());
                match over_budget(cfg, used, est_in, estimate_tokens(out_chars), Some(m)) {
                    Some(reason) => {
                        budget_hit = Some(reason);
                        Flow::Abort
                    }
                    None => Flow::Continue,
                }
            };
            let mut timed_out = false;
            let result = match tokio::time::timeout(
                cfg.llm_timeout,
                provider.stream(&req, &mut on_delta, &mut ex),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    timed_out = true;
                    Err(ProviderError::Connect(format!(
                        "no complete answer within {} (TIMEOUT LLM)",
                        dispatch_core::time::human_duration(cfg.llm_timeout.as_millis() as i64)
                    )))
                }
            };
            let latency = started.elapsed().as_millis() as u64;
            let mut event = json!({
                "id": id,
                "model": m.model.name, "provider": m.model.provider.as_str(), "base_url": m.model.endpoint(),
                "latency_ms": latency, "first_token_ms": ex.first_token_ms, "retry": retry,
                "fallback": mi > 0, "status": ex.status,
                "request_sha256": ex.request_sha256.take().or_else(|| sink.blob(&ex.request_body)),
                "response_sha256": sink.blob(ex.response_body.as_bytes()),
                "round": conv.rounds + 1,
            });
            if mi > 0 {
                event["fallback_from"] = json!(cfg.models[0].model.name);
            }
            let error = match result {
                Ok(response) => {
                    let (usage, cost, estimated) = match response.usage {
                        Some(u) => {
                            let usage = Usage {
                                input_tokens: u.input_tokens,
                                output_tokens: u.output_tokens,
                                cost_usd: 0.0,
                            };
                            let searches = response.searches.len();
                            let cost = m.price.as_ref().map(|p| {
                                p.cost(usage.input_tokens, usage.output_tokens)
                                    + crate::hosted::search_fee(m.model.provider, searches)
                            });
                            (usage, cost, false)
                        }
                        None => {
                            let (usage, cost) = billing::estimate(m, est_in, out_chars);
                            (usage, cost, true)
                        }
                    };
                    sink.settle(admission, usage.total_tokens()).await;
                    add(used, usage, cost);
                    event["input_tokens"] = json!(usage.input_tokens);
                    event["output_tokens"] = json!(usage.output_tokens);
                    event["cost_usd"] = json!(cost);
                    event["finish_reason"] = json!(response.finish_reason.as_str());
                    if response.finish_reason == FinishReason::Length {
                        event["truncated"] = json!(true);
                    }
                    if !response.searches.is_empty() {
                        event["web_searches"] = json!(response.searches.len());
                    }
                    event["response_model"] = json!(response.model);
                    // The call as a cassette entry: `dispatch replay --offline`.
                    let entry = crate::cassette::entry(&req, &response).to_string();
                    event["cassette_sha256"] = json!(sink.blob(entry.as_bytes()));
                    if estimated {
                        event["estimated"] = json!(true);
                    }
                    return Ok(Call {
                        model: m.clone(),
                        response,
                        event,
                        usage,
                        cost,
                        estimated,
                    });
                }
                Err(e) => e,
            };
            event["error"] = json!(error.to_string());
            // Billed when the provider began to answer (2xx), or when we
            // stopped waiting: it may have spent the tokens. An error status
            // is not billed by providers.
            let billed = timed_out
                || matches!(error, ProviderError::Aborted)
                || (200..300).contains(&ex.status);
            let mut events = Vec::new();
            if billed {
                let (usage, cost) = billing::estimate(m, est_in, out_chars);
                sink.settle(admission, usage.total_tokens()).await;
                add(used, usage, cost);
                billing::mark_estimated(&mut event, usage, cost);
                events.push(RunEvent::Usage(billing::usage_event(
                    &m.model.name,
                    usage,
                    cost,
                    true,
                )));
            } else {
                // The rate limiters count what an error answer may have used.
                let tokens = match error {
                    ProviderError::RateLimited { .. } => 0,
                    _ => est_in + estimate_tokens(out_chars),
                };
                sink.settle(admission, tokens).await;
            }
            if let ProviderError::Aborted = error {
                let reason = budget_hit.unwrap_or_else(|| "stream aborted".into());
                event["finish_reason"] = json!("budget_exceeded");
                events.insert(0, RunEvent::ModelCall(event));
                let _ = sink.record(events).await;
                return Err(LoopEnd::Budget(format!(
                    "budget_exceeded: {reason} (stream aborted)"
                )));
            }
            if billed {
                event["finish_reason"] = json!(if timed_out { "timed_out" } else { "cut" });
            }
            events.insert(0, RunEvent::ModelCall(event));
            let _ = sink.record(events).await;
            last_error = format!("model {} ({}): {error}", m.model.name, m.model.provider);
            if let ProviderError::RateLimited { retry_after, .. } = &error {
                // Every run calling this model waits too, on every worker.
                let wait = retry_after.unwrap_or(backoff).min(MAX_RETRY_AFTER);
                sink.rate_limited(&m.model.name, m.model.provider.as_str(), wait)
                    .await;
            }
            match &error {
                ProviderError::Refused { .. } => {
                    return Err(LoopEnd::Failed {
                        reason: last_error,
                        retryable: false,
                    });
                }
                ProviderError::Protocol(_) => break, // this model's server is broken: next model
                e if e.retryable() && retry < CALL_RETRIES => {
                    let wait = match e {
                        ProviderError::RateLimited {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(MAX_RETRY_AFTER),
                        _ => backoff,
                    };
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                _ => break,
            }
        }
    }
    let reason = if cfg.models.len() > 1 {
        format!("every model failed; last: {last_error}")
    } else {
        last_error
    };
    Err(LoopEnd::Failed {
        reason,
        retryable: true,
    })
}

/// Adds a call's bill to what the run used.
fn add(used: &mut Usage, usage: Usage, cost: Option<f64>) {
    used.input_tokens += usage.input_tokens;
    used.output_tokens += usage.output_tokens;
    used.cost_usd += cost.unwrap_or(0.0);
}
