//! The native agent courier's attempt: the model loop of `dispatch-agent`
//! as an async task of this helper or worker (no process per run). The loop
//! produces the run's event stream like any courier: `model_call`, `usage`,
//! `tool_call` and `checkpoint` events, stored round by round through the
//! [`RunSink`]; generated text goes to the log and live streams as it
//! arrives; request and response bodies are kept content-addressed in
//! `runs/<id>/calls/<sha256>.json` (secrets masked).

use dispatch_agent::Admission;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use dispatch_agent::agent_loop::{DEFAULT_LLM_TIMEOUT, DEFAULT_TOOL_ROUNDS};
use dispatch_agent::{
    Conversation, LoopConfig, LoopEnd, Message, NoTools, Override, SessionData, Tools,
};
use dispatch_core::parcel::Parcel;
use dispatch_core::{
    EventKind, NewEvent, ProcRef, RunEvent, RunId, Status, Transition, brief, now_ms,
};
use dispatch_store::{Run, Store, StoreError};
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

use super::agent::{mask, mask_value};
use super::retry::{self, AttemptFailure};
use super::watch::{Verdict, Watch};
use super::{LifecycleLog, Prepared, cancelled};
use crate::courier::{End, Ended, ended, fail};
use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::native::{CancelGuard, TextDelta, client, deltas};
use crate::os;
use crate::record::advance;

/// How often deadlines are looked at while the loop runs.
const TICK: Duration = Duration::from_millis(100);

/// What the attempt needs beyond the run.
pub(crate) struct NativeCtx<'a> {
    pub policy: &'a dispatch_core::policy::RunPolicy,
    pub session: Option<&'a str>,
    pub own_signals: bool,
    pub parcel: &'a Parcel,
    pub prepared: &'a Prepared,
    /// Starts the runs the agent hands off to (its `handoff` tool).
    pub upstream: &'a dyn crate::handoff::Upstream,
}

/// The loop's configuration for `run`: models resolved with the brief's
/// overrides and this process's keys. An error is why the run cannot start.
pub fn loop_config(
    parcel: &Parcel,
    brief_context: &Value,
    policy: &dispatch_core::policy::RunPolicy,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LoopConfig, String> {
    let Some(agent) = parcel.manifest.agent.as_ref() else {
        return Err("the parcel is FROM agent but has no MODEL (build it again)".into());
    };
    // The brief's choice, else this process's `LLM_*` (a worker's
    // cluster-wide default; locally the same as the brief's).
    let over = match Override::from_context(brief_context) {
        Some(o) => Some(o),
        None => Override::from_env(&env)?,
    };
    let models = dispatch_agent::resolve(agent, over.as_ref(), env)?;
    if policy.limits.max_cost_usd.is_some()
        && let Some(why) = dispatch_agent::resolve::unpriced_for_cost_limit(&models)
    {
        return Err(why);
    }
    Ok(LoopConfig {
        models,
        llm_timeout: agent
            .llm_timeout_ms
            .map_or(DEFAULT_LLM_TIMEOUT, Duration::from_millis),
        max_tool_rounds: agent.max_tool_rounds.unwrap_or(DEFAULT_TOOL_ROUNDS),
        max_iterations: agent.max_iterations,
        max_output_tokens: agent.max_output_tokens,
        reasoning: dispatch_agent::Override::reasoning(over.as_ref(), agent),
        allow_truncation: agent.allow_truncation,
        max_context_tokens: agent.max_context_tokens,
        max_tokens: policy.limits.max_tokens,
        max_cost_usd: policy.limits.max_cost_usd,
        used: Default::default(),
        backoff: Duration::from_millis(500),
    })
}

/// Runs the current attempt of a claimed native run to its end.
pub(crate) async fn attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    ctx: &NativeCtx<'_>,
) -> RuntimeResult<Ended> {
    let brief_context = serde_json::from_slice::<brief::Brief>(&ctx.prepared.brief)
        .map(|b| b.context)
        .unwrap_or(Value::Null);
    let env = |k: &str| std::env::var(k).ok();
    let cfg = loop_config(ctx.parcel, &brief_context, ctx.policy, env);
    // What the attempt holds while its model works is what it needs (a
    // local of this function lives, and is stored, until its end).
    drop(brief_context);
    let mut cfg = match cfg {
        Ok(cfg) => cfg,
        Err(reason) => {
            return Ok(ended(End::Final(
                fail(format!("refusing to start: {reason}")),
                None,
            )));
        }
    };
    cfg.used = run.usage;
    let mut secrets = ctx.prepared.spec.secrets.clone();
    secrets.extend(cfg.models.iter().filter_map(|m| m.key.clone()));
    // Masked in the log's lines and in what the attempt ends with (a
    // provider's error body may echo the key).
    log.mask_also(&secrets);

    // Calls an earlier attempt sent and never recorded are billed first
    // (budgets count them).
    let (lost, lines) =
        super::native_billing::bill_lost_calls(store, &run.id, &cfg.models, &secrets).await;
    for line in lines {
        log.line(&line);
    }
    cfg.used.add(lost);
    // The conversation: the last checkpoint, else the session's plus this
    // turn. A later attempt resumes from the checkpoint; so does a worker's
    // first attempt, which may be a re-execution after a lost lease.
    let checkpoint = match (run.attempt, ctx.own_signals) {
        (1, true) => None,
        _ => retry::last_checkpoint(store, &run.id).await,
    };
    let resumed = checkpoint
        .as_ref()
        .and_then(|c| serde_json::from_value::<Conversation>(c.get("state")?.clone()).ok());
    let session = match ctx.session {
        Some(key) => match store.get_session(key).await {
            Ok(s) => s,
            Err(e) => {
                return Ok(ended(End::Retryable(
                    fail(format!("cannot read session {key}: {e}")),
                    failure(format!("cannot read session {key}: {e}")),
                    None,
                )));
            }
        },
        None => None,
    };
    let session_version = session.as_ref().map_or(0, |s| s.version);
    // The conversation is held once, in `conv`: the checkpoint it was
    // read from and the session's copy go now.
    drop(checkpoint);
    let session_data = session.map(|s| s.data);
    let mut conv = match resumed {
        Some(mut conv) => {
            // The run's checkpoints hold all of it: the next is a delta.
            conv.mark_saved();
            log.line(&format!(
                "resuming after model call {} (round {})",
                conv.calls, conv.rounds
            ));
            conv
        }
        None => {
            let history = session_data
                .and_then(|data| serde_json::from_value::<SessionData>(data).ok())
                .unwrap_or_default();
            let mut messages = history.messages;
            messages.push(Message::user(dispatch_agent::prompt::user_text(
                &run.payload,
            )));
            Conversation {
                system: dispatch_agent::prompt::system_prompt(&ctx.parcel.manifest.instructions),
                messages,
                rounds: 0,
                calls: 0,
                compacted: history.compacted,
                done: Vec::new(),
                saved: None,
            }
        }
    };
    // The tools (MCP servers start here, once for the attempt) and the
    // attempt's bill of materials.
    let memory = super::native_tools::StoreMemory::new(store, run, ctx.session);
    let checkpoints = super::native_tools::StoreMemory::checkpoints(store, run, ctx.session);
    let approver = super::native_tools::StoreApprover::new(store, layout, run);
    let messenger = super::native_tools::StoreMessenger::new(store, run, ctx.upstream);
    let mut tool_ctx = super::native_tools::context(
        layout,
        run,
        ctx.parcel,
        ctx.prepared,
        &memory,
        &approver,
        &messenger,
    );
    tool_ctx.mask = secrets.clone();
    tool_ctx.checkpoints = Some(&checkpoints);
    let mut limits = super::native_tools::limit_tools(
        run,
        ctx.parcel,
        ctx.prepared,
        log,
        ctx.own_signals,
        &mut tool_ctx,
    );
    // Without RESOURCES (whose groups and rlimits are set by hooks), the
    // tools start from a small process (see `sandbox::stage`).
    if limits.hook().is_none() {
        tool_ctx.launcher = ctx.prepared.sandbox.launcher();
    }
    // `PROVIDER claude|codex`: the CLI is the loop, with its own tools.
    let cli = cfg.models[0]
        .model
        .provider
        .is_local_cli()
        .then(|| super::native_tools::cli_run(&tool_ctx, ctx.parcel, ctx.prepared));
    let started_tools = match cli {
        Some(_) => Ok(None),
        None => super::native_tools::start(ctx.parcel, tool_ctx).await,
    };
    let tool_box = match started_tools {
        Ok(t) => t,
        Err(reason) => {
            let reason = format!("cannot start the tools: {reason}");
            return Ok(ended(End::Retryable(
                fail(reason.clone()),
                failure(reason),
                None,
            )));
        }
    };
    let bom = super::native_tools::bom(ctx.parcel, &cfg.models, tool_box.as_ref(), ctx.policy);
    let mut started = vec![NewEvent::new(EventKind::Bom, run.attempt, now_ms(), bom)];
    // Which protections the tools' processes get, when there are any.
    if tool_box.is_some() {
        log.line(&ctx.prepared.sandbox.applied.line());
        started.extend(super::sandbox_event(&ctx.prepared.sandbox, run.attempt));
    }
    if let Err(e) = store.append_events(&run.id, &started).await {
        log.line(&format!("could not record the bill of materials: {e}"));
    }
    // Recorded: not held while the model works (`started` is shadowed below).
    drop(started);
    let no_tools = NoTools;
    let plain: &dyn Tools = match &tool_box {
        Some(t) => t,
        None => &no_tools,
    };
    // `dispatch eval --record` / `--replay-tools`: tool results in the cassette.
    let taped = dispatch_agent::cassette_tools::wrap(plain);
    let tools: &dyn Tools = match &taped {
        Some(t) => t,
        None => plain,
    };
    let primary = &cfg.models[0].model;
    log.line(&format!(
        "run {} attempt {}: native agent, model {} ({}){}",
        run.id,
        run.attempt,
        primary.name,
        primary.provider,
        match cfg.models.len() {
            1 => String::new(),
            n => format!(", {} fallback(s)", n - 1),
        }
    ));

    // The agent is this process for a helper (a stop signals its group);
    // nothing to signal in a worker, which cancels the task instead.
    let agent = match ctx.own_signals {
        true => os::this_process(),
        false => ProcRef {
            pid: 0,
            start_ticks: 0,
        },
    };
    let started = Transition::AgentStarted {
        agent,
        at: now_ms(),
    };
    let guard = CancelGuard::register(&run.id);
    let mut watch = Watch::new(
        run.id.clone(),
        run.attempt,
        ctx.policy.clone(),
        layout.clone(),
        run.usage,
    );
    watch.set_group(0);
    let mut sink = RunSink::new(store, layout, run, secrets);
    if let Some(agent) = &ctx.parcel.manifest.agent {
        sink.rates = super::native_rate::Limits(agent.rate_limits.clone());
    }
    let mut term = ctx
        .own_signals
        .then(|| signal(SignalKind::terminate()).ok())
        .flatten();
    let mut int = ctx
        .own_signals
        .then(|| signal(SignalKind::interrupt()).ok())
        .flatten();
    // The start is saved while the first call goes out (as a process agent
    // starts before its start is saved).
    let mut start_error = None;
    let outcome = {
        let save_start = async {
            advance(store, run, &started, None)
                .await
                .map(|()| run.stop_requested_at.is_some())
        };
        tokio::pin!(save_start);
        let mut saved = false;
        let mut looping: std::pin::Pin<Box<dyn std::future::Future<Output = LoopEnd> + Send + '_>> =
            match &cli {
                Some(run) => Box::pin(dispatch_agent::cli::run_cli(
                    &cfg, &mut conv, run, &mut sink,
                )),
                None => Box::pin(dispatch_agent::run_loop(
                    &cfg,
                    &mut conv,
                    tools,
                    &mut sink,
                    client(),
                )),
            };
        let mut tick = tokio::time::interval(TICK);
        let outcome = loop {
            tokio::select! {
                // The first call goes out before the start is written.
                biased;
                end = &mut looping => break Outcome::Loop(end),
                r = &mut save_start, if !saved => {
                    saved = true;
                    match r {
                        Ok(false) => {}
                        Ok(true) => break Outcome::Stopped,
                        Err(e) => {
                            start_error = Some(e.to_string());
                            break Outcome::Stopped;
                        }
                    }
                }
                _ = guard.notify.notified() => break Outcome::Stopped,
                Some(()) = recv(&mut term) => break Outcome::Stopped,
                Some(()) = recv(&mut int) => break Outcome::Stopped,
                _ = tick.tick() => {
                    let waiting = approver.waiting.load(std::sync::atomic::Ordering::SeqCst);
                    watch.set_paused(waiting > 0);
                    watch.tick(store).await;
                    if let Some(Verdict::TimedOut(reason)) = watch.verdict.clone() {
                        break Outcome::TimedOut(reason);
                    }
                }
            }
        };
        if !saved {
            match save_start.await {
                Ok(_) => {}
                Err(e) => start_error = Some(e.to_string()),
            }
        }
        outcome
    };
    if let Some(e) = start_error {
        return Ok(ended(End::Final(
            fail(format!("could not record the agent start: {e}")),
            None,
        )));
    }
    if let Some(t) = tool_box {
        t.shutdown().await;
        // Whatever a tool or MCP server left behind (a daemon, a `setsid`).
        if let Some(tree) = ctx.prepared.sandbox.tree() {
            tree.kill();
        }
        // Whole outputs of tools the model saw cut.
        super::collect::record_artifacts(store, layout, &run.id, ctx.prepared, log).await;
    }
    // A call cut short by the stop or the timeout is billed as far as it got.
    let finish = match &outcome {
        Outcome::Stopped => Some("stopped"),
        Outcome::TimedOut(_) => Some("timed_out"),
        Outcome::Loop(_) => None,
    };
    let in_flight = match (finish, sink.in_flight.take()) {
        (Some(finish), Some((sent, bytes))) => {
            let id = sent["id"].as_str().unwrap_or_default();
            let done = super::native_billing::recorded(store, &run.id, id).await;
            (!done).then_some((finish, sent, bytes))
        }
        _ => None,
    };
    if let Some((finish, sent, bytes)) = in_flight {
        let bill = dispatch_agent::billing::unfinished(
            &sent,
            bytes,
            finish,
            &format!(
                "the run was {} mid-call; billed an estimate",
                finish.replace('_', " ")
            ),
            &cfg.models,
        );
        if let Err(e) = dispatch_agent::Sink::record(&mut sink, bill).await {
            log.line(&format!("could not bill the call in flight: {e}"));
        }
    }
    sink.end_text();
    let sink_secrets = std::mem::take(&mut sink.secrets);
    drop(guard);
    let at = now_ms();
    let pause_on_budget = ctx
        .parcel
        .manifest
        .agent
        .as_ref()
        .is_some_and(|a| a.pause_on_budget);
    let end = match outcome {
        Outcome::Stopped => End::Final(cancelled(None), None),
        Outcome::TimedOut(reason) => End::Retryable(
            Transition::TimeOut {
                reason: reason.clone(),
                exit_code: None,
                at,
            },
            AttemptFailure {
                reason,
                exit_code: None,
                status: Status::TimedOut,
            },
            None,
        ),
        Outcome::Loop(LoopEnd::Answered { output, .. }) => {
            if let Some(key) = ctx.session {
                let conv = masked(&conv, &sink_secrets);
                save_session(store, key, &conv, session_version, &run.id, log).await;
            }
            End::Final(
                Transition::Exited { code: 0, at },
                Some(masked(&output, &sink_secrets)),
            )
        }
        Outcome::Loop(LoopEnd::Failed { reason, retryable }) => {
            let t = fail(reason.clone());
            if retryable && run.operation != dispatch_core::Operation::Service {
                End::Retryable(t, failure(reason), None)
            } else {
                End::Final(t, None)
            }
        }
        Outcome::Loop(LoopEnd::Budget(reason) | LoopEnd::ToolRounds(reason)) => {
            End::Final(fail(reason), None)
        }
        Outcome::Loop(LoopEnd::OverQuota(reason)) => match pause_on_budget {
            true => End::Suspend(super::native_quota::pause(store, &run.id, &reason).await),
            false => End::Final(fail(reason), None),
        },
        // A tool call waits for a decision: a durable wait, as a process
        // agent's `wait` event asks for.
        Outcome::Loop(LoopEnd::Suspended(pending)) => End::Suspend(wait_event(&pending, at)),
    };
    limits.end(store, &run.id, run.attempt, 0).await;
    // A dead letter reads the run's checkpoints from the store: the
    // conversation is not kept a second time, as JSON, while the run waits.
    Ok(Ended {
        end,
        checkpoint: None,
        start: None,
    })
}

/// The `wait` event a round suspended on `pending` amounts to.
fn wait_event(pending: &dispatch_agent::PendingApproval, now: i64) -> Value {
    let mut wait = serde_json::json!({
        "type": "wait", "for": "approval", "id": pending.id, "summary": pending.summary,
    });
    if let Some(deadline) = pending.deadline_ms {
        // What is left of the approval's time (its deadline stays the first one's).
        wait["timeout_s"] = serde_json::json!((deadline - now).max(0) as f64 / 1000.0);
    }
    wait
}

/// `value` with every secret masked (what the store keeps of a model's words).
pub(crate) fn masked<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    value: &T,
    secrets: &[String],
) -> T {
    if secrets.iter().all(String::is_empty) {
        return value.clone();
    }
    serde_json::to_value(value)
        .ok()
        .and_then(|v| serde_json::from_value(mask_value(v, secrets)).ok())
        .unwrap_or_else(|| value.clone())
}

pub(crate) fn failure(reason: String) -> AttemptFailure {
    AttemptFailure {
        reason,
        exit_code: None,
        status: Status::Failed,
    }
}

enum Outcome {
    Loop(LoopEnd),
    Stopped,
    TimedOut(String),
}

pub(crate) async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Saves the conversation as the session's next version. Another run that
/// saved in between wins the race for its turn; this turn is appended after it.
pub(crate) async fn save_session<S: Store + ?Sized>(
    store: &S,
    key: &str,
    conv: &Conversation,
    mut expected: i64,
    by: &RunId,
    log: &mut LifecycleLog,
) {
    let mut data = SessionData {
        messages: conv.messages.clone(),
        compacted: conv.compacted,
    };
    for _ in 0..5 {
        let value = serde_json::to_value(&data).unwrap_or(Value::Null);
        match store
            .put_session(key, &value, expected, Some(by), now_ms())
            .await
        {
            Ok(_) => return,
            Err(StoreError::SessionConflict { .. }) => {
                let Ok(Some(current)) = store.get_session(key).await else {
                    continue;
                };
                let theirs: SessionData = serde_json::from_value(current.data).unwrap_or_default();
                // Keep their history and add this turn (the messages past what this run started from).
                let mine = conv
                    .messages
                    .iter()
                    .skip_while(|m| theirs.messages.contains(m))
                    .cloned();
                let mut merged = theirs.messages.clone();
                merged.extend(mine);
                data = SessionData {
                    messages: merged,
                    compacted: theirs.compacted,
                };
                expected = current.version;
            }
            Err(e) => {
                log.line(&format!("could not save session {key}: {e}"));
                return;
            }
        }
    }
    log.line(&format!("could not save session {key}: it kept changing"));
}

/// Where the loop's results go: the run's events, log and calls directory.
pub(crate) struct RunSink<'a, S: ?Sized> {
    store: &'a S,
    run_id: RunId,
    attempt: u32,
    log: Option<std::fs::File>,
    calls: PathBuf,
    pub(crate) secrets: Vec<String>,
    /// Whether the last text written to the log ended a line.
    at_line_start: bool,
    /// Streamed text not written yet: it may be the start of a secret.
    pending: String,
    /// The call sent and not recorded yet (its `model_call_sent`), and the
    /// bytes of answer it got so far.
    pub(crate) in_flight: Option<(Value, usize)>,
    /// The parcel's `RATE_LIMIT`s.
    pub(super) rates: super::native_rate::Limits,
}

/// How many bytes at the end of `text` could begin a secret (held back).
fn held_back(text: &str, secrets: &[String]) -> usize {
    let mut keep = 0;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        for n in (1..s.len().min(text.len() + 1)).rev() {
            if n > keep
                && text.is_char_boundary(text.len() - n)
                && s.as_bytes().starts_with(&text.as_bytes()[text.len() - n..])
            {
                keep = n;
                break;
            }
        }
    }
    keep
}

impl<'a, S: Store + ?Sized> RunSink<'a, S> {
    pub(crate) fn new(store: &'a S, layout: &Layout, run: &Run, secrets: Vec<String>) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.log(&run.id))
            .ok();
        RunSink {
            store,
            run_id: run.id.clone(),
            attempt: run.attempt,
            log,
            calls: layout.run_dir(&run.id).join("calls"),
            secrets,
            at_line_start: true,
            pending: String::new(),
            in_flight: None,
            rates: super::native_rate::Limits::default(),
        }
    }

    fn emit(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        if let Some(f) = self.log.as_mut() {
            let _ = f.write_all(text.as_bytes());
        }
        if let Some(last) = text.chars().last() {
            self.at_line_start = last == '\n';
        }
        let _ = deltas().send(TextDelta {
            run_id: self.run_id.clone(),
            attempt: self.attempt,
            text,
        });
    }

    /// Ends the streamed text's line in the log.
    pub(crate) fn end_text(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(mask(&rest, &self.secrets));
        if !self.at_line_start
            && let Some(f) = self.log.as_mut()
        {
            let _ = f.write_all(b"\n");
            self.at_line_start = true;
        }
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> dispatch_agent::Sink for RunSink<'_, S> {
    fn delta(&mut self, text: &str) {
        // A secret may arrive split across fragments: hold back what could
        // be the start of one until the next fragment says.
        self.pending.push_str(text);
        let masked = mask(&self.pending, &self.secrets);
        let keep = held_back(&masked, &self.secrets);
        let ready = masked[..masked.len() - keep].to_string();
        self.pending = masked[masked.len() - keep..].to_string();
        self.emit(ready);
    }

    async fn record(&mut self, events: Vec<RunEvent>) -> Result<(), String> {
        let at = now_ms();
        let batch: Vec<NewEvent> = events
            .into_iter()
            .map(|e| {
                let (kind, data) = e.into_parts();
                NewEvent::new(kind, self.attempt, at, mask_value(data, &self.secrets))
            })
            .collect();
        if batch.iter().any(|e| e.is(EventKind::ModelCall)) {
            self.end_text();
            self.in_flight = None;
        }
        let sent = batch
            .iter()
            .find(|e| e.is(EventKind::ModelCallSent))
            .map(|e| (e.data.clone(), 0));
        // A short outage should not lose a round: try a few times.
        let mut last = String::new();
        for wait in [0u64, 100, 400, 1_000, 2_000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match self.store.append_events(&self.run_id, &batch).await {
                Ok(()) => {
                    // Only a call whose sending is on record goes out.
                    self.in_flight = sent.or(self.in_flight.take());
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn streamed(&mut self, bytes: usize) {
        if let Some((_, got)) = self.in_flight.as_mut() {
            *got += bytes;
        }
    }

    async fn admit(&mut self, model: &str, provider: &str, est_tokens: u64) -> Admission {
        let (admission, waited) = self
            .rates
            .admit(
                self.store,
                model,
                provider,
                est_tokens,
                (&self.run_id, self.attempt),
            )
            .await;
        if let Some(event) = waited {
            let _ = self.record(vec![RunEvent::RateLimitWait(event)]).await;
        }
        admission
    }

    async fn over_quota(&mut self) -> Option<String> {
        super::native_quota::over_quota(self.store, &self.run_id).await
    }

    async fn settle(&mut self, admission: Admission, tokens: u64) {
        super::native_rate::Limits::settle(self.store, admission, tokens).await;
    }

    async fn rate_limited(&mut self, model: &str, provider: &str, wait: Duration) {
        self.rates.block(self.store, model, provider, wait).await;
    }

    fn blob(&mut self, bytes: &[u8]) -> Option<String> {
        if bytes.is_empty() {
            return None;
        }
        let text = mask(&String::from_utf8_lossy(bytes), &self.secrets);
        let sha = brief::sha256_hex(text.as_bytes());
        let path = self.calls.join(format!("{sha}.json"));
        if !path.exists() {
            let _ = std::fs::create_dir_all(&self.calls);
            let tmp = self.calls.join(format!(".{sha}.tmp"));
            if std::fs::write(&tmp, text.as_bytes()).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Some(sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_across_fragments_is_held_back_then_masked() {
        let secrets = vec!["sk-SECRET".to_string()];
        let mut pending = String::new();
        let mut out = String::new();
        for piece in ["the key is sk-S", "ECR", "ET, bye"] {
            pending.push_str(piece);
            let masked = mask(&pending, &secrets);
            let keep = held_back(&masked, &secrets);
            out.push_str(&masked[..masked.len() - keep]);
            pending = masked[masked.len() - keep..].to_string();
        }
        out.push_str(&mask(&pending, &secrets));
        assert_eq!(out, "the key is ****, bye");
        assert_eq!(held_back("nothing like it", &secrets), 0);
        assert_eq!(held_back("ends with sk-", &secrets), 3);
    }
}
