//! The phases of a native attempt, which [`super::native::attempt`] runs in
//! order: the loop's configuration (with the calls an earlier attempt lost),
//! the conversation to start from, the tools and the bill of materials, the
//! model loop driven to its end, the call a stop cut short, and what the
//! attempt ends with.
//!
//! A phase takes what only it needs and returns before the model loop
//! starts: what it read (the brief's context, a checkpoint, the session, the
//! bill of materials) is not held while the model works (a local of the
//! attempt lives, and is stored in its future, until the attempt's end).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch_agent::cli::CliRun;
use dispatch_agent::tools::ToolBox;
use dispatch_agent::{Conversation, LoopConfig, LoopEnd, Message, NoTools, SessionData, Tools};
use dispatch_core::{EventKind, NewEvent, ProcRef, Status, Transition, now_ms};
use dispatch_store::{Run, Store};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::native::{NativeCtx, RunSink, failure, loop_config, masked, recv, save_session};
use super::native_tools::{StoreApprover, StoreMemory, StoreMessenger};
use super::resources::AttemptLimits;
use super::retry::{self, AttemptFailure};
use super::watch::{Verdict, Watch};
use super::{LifecycleLog, cancelled};
use crate::courier::{End, Ended, ended, fail};
use crate::layout::Layout;
use crate::native::{CancelGuard, client};
use crate::os;
use crate::record::advance;

/// How often deadlines are looked at while the loop runs.
const TICK: Duration = Duration::from_millis(100);
/// How often the watch is looked at while it is quiet ([`Watch::quiet`]).
const QUIET_TICK: Duration = Duration::from_secs(1);

/// How the model loop ended, or what ended it first.
pub(super) enum Outcome {
    Loop(LoopEnd),
    Stopped,
    TimedOut(String),
}

/// The model loop running: `dispatch-agent`'s, or a CLI's.
pub(super) type Looping<'l> = Pin<Box<dyn Future<Output = LoopEnd> + Send + 'l>>;

/// The loop over the conversation: `cli` when the provider is a CLI (the
/// CLI is the loop, with its own tools), else the model's with `tools`.
pub(super) fn looping<'l, S: Store + ?Sized>(
    cfg: &'l LoopConfig,
    conv: &'l mut Conversation,
    cli: Option<&'l CliRun>,
    tools: &'l dyn Tools,
    sink: &'l mut RunSink<'_, S>,
) -> Looping<'l> {
    match cli {
        Some(run) => Box::pin(dispatch_agent::cli::run_cli(cfg, conv, run, sink)),
        None => Box::pin(dispatch_agent::run_loop(cfg, conv, tools, sink, client())),
    }
}

/// What the tools keep and ask through the store: the memory of
/// `memory_*`, the named checkpoints, the approvals and the messages.
pub(super) struct ToolServices<'a, S: ?Sized> {
    memory: StoreMemory<'a, S>,
    checkpoints: StoreMemory<'a, S>,
    pub(super) approver: StoreApprover<'a, S>,
    messenger: StoreMessenger<'a, S>,
}

/// The attempt's tools: the started LOCAL tools and MCP servers (none for
/// a CLI, or a parcel without tools), the CLI that is the loop, and the
/// limits their processes run under.
pub(super) struct Tooling<'t> {
    pub(super) tool_box: Option<ToolBox<'t>>,
    pub(super) cli: Option<CliRun>,
    pub(super) limits: AttemptLimits,
}

impl Tooling<'_> {
    /// The started tools, else none (every call is answered with an error
    /// the model can read).
    pub(super) fn plain(&self) -> &dyn Tools {
        match &self.tool_box {
            Some(t) => t,
            None => &NoTools,
        }
    }
}

/// What ends the loop before the model does: a cancel, a helper's SIGTERM
/// or SIGINT, or the watch's timeout (paused while a call waits for its
/// approval).
pub(super) struct Stops<'g> {
    guard: &'g CancelGuard,
    watch: Watch,
    term: Option<Signal>,
    int: Option<Signal>,
    /// Calls waiting for a decision (the approver's count).
    waiting: &'g AtomicUsize,
}

impl<'g> Stops<'g> {
    pub(super) fn new(
        own_signals: bool,
        guard: &'g CancelGuard,
        watch: Watch,
        waiting: &'g AtomicUsize,
    ) -> Self {
        let term = own_signals
            .then(|| signal(SignalKind::terminate()).ok())
            .flatten();
        let int = own_signals
            .then(|| signal(SignalKind::interrupt()).ok())
            .flatten();
        Stops {
            guard,
            watch,
            term,
            int,
            waiting,
        }
    }
}

/// What every phase reads: the store, the layout and the attempt's context.
pub(super) struct Phases<'a, S: ?Sized> {
    pub(super) store: &'a S,
    pub(super) layout: &'a Layout,
    pub(super) ctx: &'a NativeCtx<'a>,
}

impl<'a, S: Store + ?Sized> Phases<'a, S> {
    /// The loop's configuration, its usage counting the calls an earlier
    /// attempt lost, and the secrets to mask (the run's and the model keys).
    pub(super) async fn configure(
        &self,
        run: &Run,
        log: &mut LifecycleLog,
    ) -> Result<(LoopConfig, Vec<String>), Ended> {
        let ctx = self.ctx;
        let env = |k: &str| std::env::var(k).ok();
        let cfg = loop_config(ctx.parcel, &ctx.prepared.brief_context, ctx.policy, env);
        let mut cfg = match cfg {
            Ok(cfg) => cfg,
            Err(reason) => {
                return Err(ended(End::Final(
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
            super::native_billing::bill_lost_calls(self.store, &run.id, &cfg.models, &secrets)
                .await;
        for line in lines {
            log.line(&line);
        }
        cfg.used.add(lost);
        Ok((cfg, secrets))
    }

    /// The conversation: the last checkpoint, else the session's plus this
    /// turn. A later attempt resumes from the checkpoint; so does a worker's
    /// first attempt, which may be a re-execution after a lost lease. With
    /// it, the session's version it was read from (0 without a session).
    /// `payload`: the run's input, which becomes this turn's message.
    pub(super) async fn conversation(
        &self,
        run: &Run,
        payload: Value,
        log: &mut LifecycleLog,
    ) -> Result<(Conversation, i64), Ended> {
        let (store, ctx) = (self.store, self.ctx);
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
                    return Err(ended(End::Retryable(
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
        let conv = match resumed {
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
                messages.push(Message::user(dispatch_agent::prompt::into_user_text(
                    payload,
                )));
                Conversation {
                    system: dispatch_agent::prompt::system_prompt(
                        &self.ctx.parcel.manifest.instructions,
                    ),
                    messages,
                    rounds: 0,
                    calls: 0,
                    compacted: history.compacted,
                    done: Vec::new(),
                    saved: None,
                }
            }
        };
        Ok((conv, session_version))
    }

    /// The store's side of the tools (see [`ToolServices`]).
    pub(super) fn services(&self, run: &Run) -> ToolServices<'a, S> {
        ToolServices {
            memory: StoreMemory::new(self.store, run, self.ctx.session),
            checkpoints: StoreMemory::checkpoints(self.store, run, self.ctx.session),
            approver: StoreApprover::new(self.store, self.layout, run),
            messenger: StoreMessenger::new(self.store, run, self.ctx.upstream),
        }
    }

    /// Starts the tools (MCP servers start here, once for the attempt), or
    /// readies the CLI that is the loop.
    pub(super) async fn start_tools<'t>(
        &self,
        run: &Run,
        log: &mut LifecycleLog,
        cfg: &LoopConfig,
        secrets: &[String],
        services: &'t ToolServices<'_, S>,
    ) -> Result<Tooling<'t>, Ended>
    where
        'a: 't,
    {
        let ctx = self.ctx;
        let mut tool_ctx = super::native_tools::context(
            self.layout,
            run,
            ctx.parcel,
            ctx.prepared,
            &services.memory,
            &services.approver,
            &services.messenger,
        );
        tool_ctx.mask = secrets.to_vec();
        tool_ctx.checkpoints = Some(&services.checkpoints);
        let limits = super::native_tools::limit_tools(
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
        match started_tools {
            Ok(tool_box) => Ok(Tooling {
                tool_box,
                cli,
                limits,
            }),
            Err(reason) => {
                let reason = format!("cannot start the tools: {reason}");
                Err(ended(End::Retryable(
                    fail(reason.clone()),
                    failure(reason),
                    None,
                )))
            }
        }
    }

    /// Records the attempt's bill of materials (and which protections the
    /// tools' processes get), then says in the log which model runs. The
    /// events are not held while the model works: they go with this phase.
    pub(super) async fn bill_of_materials(
        &self,
        run: &Run,
        log: &mut LifecycleLog,
        cfg: &LoopConfig,
        tool_box: Option<&ToolBox<'_>>,
    ) {
        let ctx = self.ctx;
        let bom = super::native_tools::bom(ctx.parcel, &cfg.models, tool_box, ctx.policy);
        let mut started = vec![NewEvent::new(EventKind::Bom, run.attempt, now_ms(), bom)];
        // Which protections the tools' processes get, when there are any.
        if tool_box.is_some() {
            log.line(&ctx.prepared.sandbox.applied.line());
            started.extend(super::sandbox_event(&ctx.prepared.sandbox, run.attempt));
        }
        if let Err(e) = self.store.append_events(&run.id, &started).await {
            log.line(&format!("could not record the bill of materials: {e}"));
        }
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
    }

    /// The agent's start. The agent is this process for a helper (a stop
    /// signals its group); nothing to signal in a worker, which cancels the
    /// task instead.
    pub(super) fn agent_started(&self) -> Transition {
        let agent = match self.ctx.own_signals {
            true => os::this_process(),
            false => ProcRef {
                pid: 0,
                start_ticks: 0,
            },
        };
        Transition::AgentStarted {
            agent,
            at: now_ms(),
        }
    }

    /// The watch over the run's deadlines, from now.
    pub(super) fn watch(&self, run: &Run) -> Watch {
        let mut watch = Watch::new(
            run.id.clone(),
            run.attempt,
            self.ctx.policy.clone(),
            self.layout.clone(),
            run.usage,
        );
        watch.set_group(0);
        watch
    }

    /// Where the loop's results go, masking `secrets`, under the parcel's
    /// `RATE_LIMIT`s.
    pub(super) fn sink(&self, run: &Run, secrets: Vec<String>) -> RunSink<'a, S> {
        let mut sink = RunSink::new(self.store, self.layout, run, secrets);
        if let Some(agent) = &self.ctx.parcel.manifest.agent {
            sink.rates = super::native_rate::Limits(agent.rate_limits.clone());
        }
        sink
    }

    /// Drives `looping` to its end, or to a stop or the timeout, while the
    /// start is saved: the start is saved while the first call goes out (as
    /// a process agent starts before its start is saved). An error is what
    /// the attempt ends with when the start could not be saved.
    pub(super) async fn drive(
        &self,
        run: &mut Run,
        start: &Transition,
        mut looping: Looping<'_>,
        stops: &mut Stops<'_>,
    ) -> Result<Outcome, Ended> {
        let store = self.store;
        let mut start_error = None;
        // Boxed and dropped once written, and the watch's look boxed: what
        // this function holds while the model works is its own state, not
        // the largest of what it awaits once in a while (issue #38).
        let mut save_start = Some(Box::pin(async {
            advance(store, run, start, None).await.map(|()| {
                // The row saved comes back with the run's input, which its
                // conversation holds already: not a second copy while the
                // model works (issue #38 item 2). Nothing of the attempt
                // reads it; the run's next record (its end, or a retry's
                // claim) has it again.
                run.payload = Value::Null;
                run.stop_requested_at.is_some()
            })
        }));
        // A look every TICK, or every QUIET_TICK while the watch has
        // nothing to watch (no deadline, no limit: a native run's state
        // cannot change that but by a look).
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        let outcome = loop {
            tokio::select! {
                // The first call goes out before the start is written.
                biased;
                end = &mut looping => break Outcome::Loop(end),
                r = async { save_start.as_mut().expect("guarded").await }, if save_start.is_some() => {
                    save_start = None;
                    match r {
                        Ok(false) => {}
                        Ok(true) => break Outcome::Stopped,
                        Err(e) => {
                            start_error = Some(e.to_string());
                            break Outcome::Stopped;
                        }
                    }
                }
                _ = stops.guard.notify.notified() => break Outcome::Stopped,
                Some(()) = recv(&mut stops.term) => break Outcome::Stopped,
                Some(()) = recv(&mut stops.int) => break Outcome::Stopped,
                () = &mut tick => {
                    let waiting = stops.waiting.load(Ordering::SeqCst);
                    stops.watch.set_paused(waiting > 0);
                    Box::pin(stops.watch.tick(store)).await;
                    if let Some(Verdict::TimedOut(reason)) = stops.watch.verdict.clone() {
                        break Outcome::TimedOut(reason);
                    }
                    let next = if stops.watch.quiet() { QUIET_TICK } else { TICK };
                    tick.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        };
        if let Some(save_start) = save_start
            && let Err(e) = save_start.await
        {
            start_error = Some(e.to_string());
        }
        match start_error {
            Some(e) => Err(ended(End::Final(
                fail(format!("could not record the agent start: {e}")),
                None,
            ))),
            None => Ok(outcome),
        }
    }

    /// Shuts the tools down after the loop, when there are any, with
    /// whatever they left behind.
    pub(super) async fn stop_tools(
        &self,
        run: &Run,
        log: &mut LifecycleLog,
        tools: Option<ToolBox<'_>>,
    ) {
        let Some(tools) = tools else {
            return;
        };
        tools.shutdown().await;
        // Whatever a tool or MCP server left behind (a daemon, a `setsid`).
        if let Some(tree) = self.ctx.prepared.sandbox.tree() {
            tree.kill();
        }
        // Whole outputs of tools the model saw cut.
        super::collect::record_artifacts(self.store, self.layout, &run.id, self.ctx.prepared, log)
            .await;
    }

    /// Bills a call cut short by the stop or the timeout as far as it got.
    pub(super) async fn bill_in_flight(
        &self,
        run: &Run,
        log: &mut LifecycleLog,
        cfg: &LoopConfig,
        sink: &mut RunSink<'_, S>,
        outcome: &Outcome,
    ) {
        let finish = match outcome {
            Outcome::Stopped => Some("stopped"),
            Outcome::TimedOut(_) => Some("timed_out"),
            Outcome::Loop(_) => None,
        };
        let in_flight = match (finish, sink.take_in_flight()) {
            (Some(finish), Some((sent, bytes))) => {
                let id = sent["id"].as_str().unwrap_or_default();
                let done = super::native_billing::recorded(self.store, &run.id, id).await;
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
            if let Err(e) = dispatch_agent::Sink::record(sink, bill).await {
                log.line(&format!("could not bill the call in flight: {e}"));
            }
        }
    }

    /// What the attempt ends with for `outcome`; an answer in a session is
    /// saved as the session's next version (read at `session_version`).
    pub(super) async fn end(
        &self,
        run: &Run,
        log: &mut LifecycleLog,
        outcome: Outcome,
        conv: &Conversation,
        session_version: i64,
        secrets: &[String],
    ) -> End {
        let (store, ctx) = (self.store, self.ctx);
        let at = now_ms();
        let pause_on_budget = ctx
            .parcel
            .manifest
            .agent
            .as_ref()
            .is_some_and(|a| a.pause_on_budget);
        match outcome {
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
                    let conv = masked(conv, secrets);
                    save_session(store, key, &conv, session_version, &run.id, log).await;
                }
                End::Final(
                    Transition::Exited { code: 0, at },
                    Some(masked(&output, secrets)),
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
        }
    }
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
