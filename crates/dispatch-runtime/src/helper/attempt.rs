//! The attempts of one run: start the agent, watch it, decide how the
//! attempt ended, and either finish the run or requeue it for another try
//! after a backoff. A helper process owns every attempt of its run; a
//! worker only the one it claimed (the next is any worker's).

use std::sync::Arc;

use dispatch_core::parcel::{Courier, Parcel};
use dispatch_core::{NewEvent, Operation, Status, Transition, now_ms};
use dispatch_store::{Run, Store};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::agent::{EventPump, Supervisor};
use super::retry::{self, AttemptFailure};
use super::watch::{Verdict, Watch};
use super::{Host, Known, LifecycleLog, agent, cancelled, collect, finish, load_parcel, prepare};
use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;
use crate::os;
use crate::record::{AdvanceError, advance, advance_all};
use crate::submit::session_file;

/// How one attempt ended.
pub(super) enum End {
    /// The run ends now with `t`.
    Final(Transition, Option<Value>),
    /// The attempt failed in a way another attempt may fix.
    Retryable(Transition, AttemptFailure, Option<Value>),
    /// The agent asked for a durable wait (its `wait` event) and exited 0.
    Suspend(Value),
}

impl End {
    /// This end with every secret value masked in its reasons and output
    /// (a provider's error body may echo a key; an agent may print one).
    fn masked(self, secrets: &[String]) -> End {
        if secrets.is_empty() {
            return self;
        }
        let output = |o: Option<Value>| o.map(|v| agent::mask_value(v, secrets));
        match self {
            End::Final(t, o) => End::Final(mask_transition(t, secrets), output(o)),
            End::Retryable(t, mut failure, o) => {
                failure.reason = agent::mask(&failure.reason, secrets);
                End::Retryable(mask_transition(t, secrets), failure, output(o))
            }
            End::Suspend(wait) => End::Suspend(agent::mask_value(wait, secrets)),
        }
    }
}

/// `t` with every secret value masked in its reason.
fn mask_transition(mut t: Transition, secrets: &[String]) -> Transition {
    if let Some(reason) = t.reason_mut() {
        *reason = agent::mask(reason, secrets);
    }
    t
}

/// How one attempt went.
pub(super) struct Ended {
    pub(super) end: End,
    /// The last checkpoint the attempt wrote.
    pub(super) checkpoint: Option<Value>,
    /// The agent's start, when it is not saved yet (see [`agent::START_WINDOW`]).
    pub(super) start: Option<Unsaved>,
}

/// A quick agent's start, saved with the attempt's end: the start and the
/// events the agent wrote go in the same transaction as the end.
pub(super) struct Unsaved {
    pub(super) start: Transition,
    /// Saved right after the start.
    pub(super) events: Vec<NewEvent>,
}

impl Unsaved {
    fn start(start: Transition) -> Self {
        Unsaved {
            start,
            events: Vec::new(),
        }
    }
}

/// Runs attempts of the claimed run until one ends it. Returns its exit status.
pub(super) async fn run_attempts<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    mut run: Run,
    log: &mut LifecycleLog,
    host: Host,
    known: Known,
) -> RuntimeResult<i32> {
    // Loaded once for every attempt of the run.
    let parcel = match known.parcel {
        Some(p) => Ok(p),
        None => load_parcel(layout, &run).map(Arc::new),
    };
    let extras = match known.extras {
        Some(extras) => Some(extras),
        None => store.run_extras(&run.id).await.ok(),
    };
    let policy = retry::policy_of(extras.as_ref(), parcel.as_ref().ok().map(|p| &p.manifest));
    // Handoffs start their runs here, unless the host has its own way.
    let local = crate::handoff::LocalUpstream::new(store, layout);
    let upstream: &dyn crate::handoff::Upstream = match &known.upstream {
        Some(u) => u.as_ref(),
        None => &local,
    };
    let keep_workspace = extras.as_ref().is_some_and(|e| e.keep_workspace);
    // The agent's TRACEPARENT: the run's span, in its caller's trace if any.
    let traceparent = dispatch_core::trace::run_context(
        &run.id,
        extras.as_ref().and_then(|e| e.traceparent.as_deref()),
    )
    .to_string();
    let session = extras.and_then(|e| e.session);
    let briefs = known.briefs.clone();
    let here = known.here.clone();
    let shared = known.shared;
    let turn = known.turn;
    loop {
        let max = policy.max_attempts();
        match run.attempt {
            1 => log.line(&format!("attempt 1 of {max}")),
            n => {
                // Woken from a durable wait or recovered: not every attempt counts.
                let counted = n.saturating_sub(retry::lost_recoveries(store, &run.id).await);
                log.line(&match counted == n {
                    true => format!("attempt {n} of {max}"),
                    false => format!("attempt {n} (counts as {counted} of {max})"),
                });
            }
        }
        let ctx = Context {
            policy: &policy,
            session: session.as_deref(),
            own_signals: host.own_signals,
            parcel: parcel.as_deref(),
            upstream,
            leased: host.leased,
            briefs: briefs.as_deref(),
            here: here.as_deref(),
            traceparent: &traceparent,
            shared: shared.as_ref(),
            turn: turn.as_deref(),
        };
        let mut ended = one_attempt(store, layout, &mut run, log, &ctx).await?;
        // Whatever the attempt ends with is stored and printed: no secret in it.
        ended.end = ended.end.masked(log.secrets());
        if let Some(objects) = &shared {
            // A large output goes to the artifact store; the run keeps a reference.
            if let End::Final(_, output) | End::Retryable(_, _, output) = &mut ended.end {
                super::shared::spill_output(store, objects, layout, &run.id, output, log).await;
            }
        }
        let checkpoint = ended.checkpoint;
        let (mut steps, then) = match ended.start {
            Some(u) => (vec![u.start], u.events),
            None => (Vec::new(), Vec::new()),
        };
        let (t, failure, output) = match ended.end {
            End::Final(t, output) => (t, None, output),
            End::Retryable(t, failure, output) => (t, Some(failure), output),
            End::Suspend(wait) => {
                let woke = crate::suspend::suspend(store, &mut run, &wait, &steps, &then).await?;
                log.line(&match (&run.state, woke) {
                    (_, true) => "what the run waits for is here already; next attempt".into(),
                    (state, false) => format!("suspended: {}", state.reason().unwrap_or("")),
                });
                if !woke || host.leased {
                    // No process stays behind; the wake queues the next attempt.
                    leave_workspace(layout, &run, host, keep_workspace);
                    return Ok(crate::run_exit_code(&run.state));
                }
                match super::slot::claim(store, layout, run.clone()).await? {
                    Ok(super::slot::Claim::Held(held)) => {
                        run = held;
                        continue;
                    }
                    Ok(super::slot::Claim::Ended(ended)) => {
                        return Ok(crate::run_exit_code(&ended.state));
                    }
                    Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
                    Err(AdvanceError::Store(e)) => return Err(e.into()),
                }
            }
        };
        // Attempts used so far, not counting lost-helper recoveries (read
        // only when another attempt is possible: it scans the event log).
        let used = match failure {
            Some(_) => run
                .attempt
                .saturating_sub(retry::lost_recoveries(store, &run.id).await),
            None => run.attempt,
        };
        let stop_requested = failure.is_some()
            && store
                .get_run(&run.id)
                .await
                .map(|r| r.stop_requested_at.is_some())
                .unwrap_or(false);
        let Some(failure) = failure.filter(|_| used < max && !stop_requested) else {
            steps.push(t);
            let code = finish(store, layout, &mut run, log, host, &steps, &then, output).await?;
            if let Some(turn) = &turn {
                turn.ended();
            }
            if let Some(parent) = &run.parent_id {
                crate::workflow::member_ended(parent);
            }
            retry::dead_letter(store, &run, checkpoint).await;
            if !keep_workspace {
                // Ended: the workspace goes (see `crate::workspace`), off this
                // thread: an unmount can take a while, and the coordinator
                // just woken may be waiting for the thread.
                let (layout, id) = (layout.clone(), run.id.clone());
                let gone = move || crate::workspace::release(&layout, &id);
                let _ = tokio::task::spawn_blocking(gone).await;
            }
            return Ok(code);
        };
        // Another attempt follows: the start of this one is saved first.
        if !steps.is_empty() {
            match advance_all(store, &mut run, &steps, &then, None).await {
                Ok(()) => {}
                Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
                Err(AdvanceError::Store(e)) => return Err(e.into()),
            }
        }
        let wait = policy.backoff_ms(used, fastrand::f64());
        log.line(&retry::retry_line(&failure, run.attempt, used, max, wait));
        if !retry::requeue(store, &mut run, &failure, now_ms() + wait as i64, false).await? {
            return Ok(crate::run_exit_code(&store.get_run(&run.id).await?.state));
        }
        if host.leased {
            // Queued under no lease: the next attempt is any worker's.
            leave_workspace(layout, &run, host, keep_workspace);
            return Ok(crate::run_exit_code(&run.state));
        }
        let Some(due) = retry::wait_until_due(store, &run.id).await? else {
            return Ok(crate::run_exit_code(&store.get_run(&run.id).await?.state));
        };
        run = due;
        match super::slot::claim(store, layout, run.clone()).await? {
            Ok(super::slot::Claim::Held(held)) => run = held,
            Ok(super::slot::Claim::Ended(ended)) => return Ok(crate::run_exit_code(&ended.state)),
            Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
            Err(AdvanceError::Store(e)) => return Err(e.into()),
        }
    }
}

/// Runs the current attempt of a claimed (`starting`) run to its end.
/// What every attempt of a run shares.
struct Context<'a> {
    policy: &'a dispatch_core::policy::RunPolicy,
    session: Option<&'a str>,
    own_signals: bool,
    parcel: Result<&'a Parcel, &'a String>,
    upstream: &'a dyn crate::handoff::Upstream,
    /// A worker holds the run (a workflow's members go to the queue).
    leased: bool,
    briefs: Option<&'a dyn crate::workflow::BriefSink>,
    /// The worker that runs the member runs it has room for itself.
    here: Option<&'a dyn crate::workflow::RunHere>,
    traceparent: &'a str,
    /// The cluster's shared artifact store (see [`super::shared`]).
    shared: Option<&'a Arc<crate::objects::Objects>>,
    /// A workflow member's signal to its coordinator.
    turn: Option<&'a crate::workflow::TurnSignal>,
}

/// An attempt that ends before its agent starts.
fn ended(end: End) -> Ended {
    Ended {
        end,
        checkpoint: None,
        start: None,
    }
}

async fn one_attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    ctx: &Context<'_>,
) -> RuntimeResult<Ended> {
    let Context {
        policy,
        session,
        own_signals,
        parcel,
        upstream,
        leased,
        briefs,
        here,
        traceparent,
        shared,
        turn,
    } = *ctx;
    if run.stop_requested_at.is_some() {
        return Ok(ended(End::Final(cancelled(None), None)));
    }
    let mut prepared = match prepare(layout, run, parcel, traceparent) {
        Ok(p) => {
            log.mask_also(&p.spec.secrets);
            p
        }
        Err(reason) => {
            let t = Transition::Fail {
                reason,
                exit_code: None,
                at: now_ms(),
            };
            return Ok(ended(End::Final(t, None)));
        }
    };
    if prepared.courier == Courier::Noop {
        // The noop courier: the agent "starts" and succeeds at once; no
        // process (pid 0, which process-group signalling never touches).
        log.line(&format!(
            "run {} attempt {}: noop courier",
            run.id, run.attempt
        ));
        let agent = dispatch_core::ProcRef {
            pid: 0,
            start_ticks: 0,
        };
        let started = Transition::AgentStarted {
            agent,
            at: now_ms(),
        };
        let done = Transition::Exited {
            code: 0,
            at: now_ms(),
        };
        // Saved with the end, at once.
        return Ok(Ended {
            end: End::Final(done, None),
            checkpoint: None,
            start: Some(Unsaved::start(started)),
        });
    }
    if let (Courier::Workflow, Ok(parcel)) = (prepared.courier, parcel) {
        let host = crate::workflow::Where {
            local: !leased,
            briefs,
            here,
        };
        return super::coordinator::attempt(store, layout, run, log, policy, parcel, host).await;
    }
    prepared.shared = shared.cloned();
    // The parcel's state as the cluster has it (see `super::shared`).
    let state = match parcel {
        Ok(p) => super::shared::pull_state(&prepared, layout, &p.manifest.name, log).await,
        Err(_) => Ok(None),
    };
    let state = match state {
        Ok(state) => state,
        Err(reason) => {
            let t = Transition::Fail {
                reason: reason.clone(),
                exit_code: None,
                at: now_ms(),
            };
            let failure = AttemptFailure {
                reason,
                exit_code: None,
                status: Status::Failed,
            };
            return Ok(ended(End::Retryable(t, failure, None)));
        }
    };
    if let (Courier::Agent, Ok(parcel)) = (prepared.courier, parcel) {
        let ctx = super::native::NativeCtx {
            policy,
            session,
            own_signals,
            parcel,
            prepared: &prepared,
            upstream,
        };
        if let Some(turn) = turn {
            turn.agent_started();
        }
        let ended = match parcel.manifest.component {
            Some(_) => super::wasm::attempt(store, layout, run, log, &ctx).await,
            None => super::native::attempt(store, layout, run, log, &ctx).await,
        };
        super::shared::push_state(store, run, &prepared, layout, state, log).await;
        return ended;
    }
    let dir = layout.run_dir(&run.id);
    let spec = &mut prepared.spec;
    if run.attempt > 1 {
        // Each attempt has its own events file.
        spec.events = dir.join(format!("events.{}.jsonl", run.attempt));
        set_env(
            &mut spec.env,
            "DISPATCH_EVENTS",
            &spec.events.to_string_lossy(),
        );
    }
    let _ = std::fs::remove_file(&prepared.output_path); // an earlier attempt's result
    // Only a later attempt has an earlier attempt's checkpoint to resume
    // from, or a wake to resume with: both from one read of the run's events.
    let history = match run.attempt {
        1 => Vec::new(),
        _ => retry::all_events(store, &run.id).await,
    };
    if let Some(checkpoint) = retry::checkpoint_in(&history) {
        let path = dir.join("checkpoint.json");
        let bytes = serde_json::to_vec(&checkpoint).expect("a checkpoint is JSON data");
        if std::fs::write(&path, bytes).is_ok() {
            set_env(
                &mut spec.env,
                "DISPATCH_CHECKPOINT",
                &path.to_string_lossy(),
            );
            log.line(&format!("resuming from checkpoint {}", checkpoint["step"]));
        }
    }
    // What woke a suspended run, for the attempt it queued.
    if let Some(resume) = crate::suspend::resume_in(&history, run.attempt)
        && let Some(path) = crate::suspend::write_resume(layout, &run.id, &resume)
    {
        set_env(&mut spec.env, "DISPATCH_RESUME", &path);
        log.line(&format!("resuming: {resume}"));
    }
    // The session's file, as the store has it (another worker may have
    // run the last turn).
    let mut session_state = None;
    if let Some((name, file)) = session.and_then(|s| Some((s, session_file(layout, s)?))) {
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let pulled = super::session_file::pull(store, &file, name).await;
        // Made by the helper: a sandboxed agent must be able to write them.
        if let (Some(owner), Some(parent)) = (
            crate::sandbox::owner::of_courier(prepared.courier),
            file.parent(),
        ) {
            let _ = crate::sandbox::owner::give(parent, owner);
            if file.exists() {
                let _ = crate::sandbox::owner::give(&file, owner);
            }
        }
        session_state = Some((name, file.clone(), pulled));
        set_env(
            &mut spec.env,
            "DISPATCH_SESSION_FILE",
            &file.to_string_lossy(),
        );
    }
    log.line(&format!(
        "run {} attempt {}: starting {} `{}`",
        run.id,
        run.attempt,
        run.operation,
        prepared.spec.command.join(" ")
    ));
    // The container courier starts its runtime's client instead.
    let container = match prepared.courier {
        Courier::Image => match super::image::plan(layout, run, parcel, &prepared.spec) {
            Ok(plan) => Some(plan),
            Err(reason) => {
                let t = Transition::Fail {
                    reason,
                    exit_code: None,
                    at: now_ms(),
                };
                return Ok(ended(End::Final(t, None)));
            }
        },
        _ => None,
    };
    // A container's RESOURCES are the runtime's container limits.
    let mut limits = super::resources::AttemptLimits::begin(
        &run.id,
        run.attempt,
        parcel.ok().filter(|_| container.is_none()),
        log,
        own_signals,
    );
    if container.is_none() {
        log.line(&prepared.sandbox.applied.line());
    }
    let spawned = match &container {
        Some(plan) => {
            super::image::spawn(layout, run, plan, &prepared.spec, &prepared.sandbox, log)
        }
        None => agent::spawn(&prepared.spec, limits.sandbox.as_ref(), &prepared.sandbox),
    };
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let hint = match prepared.sandbox.applied.on && e.kind() != std::io::ErrorKind::NotFound
            {
                true => format!(
                    " (hint: if the sandbox could not be set up on this machine, run with {}=off)",
                    crate::sandbox::SANDBOX_ENV
                ),
                false => String::new(),
            };
            let reason = format!(
                "could not start `{}`: {e}{hint}",
                prepared.spec.command.join(" ")
            );
            let t = Transition::Fail {
                reason,
                exit_code: Some(code),
                at: now_ms(),
            };
            return Ok(ended(End::Final(t, None)));
        }
    };
    let agent_ref = os::proc_ref(child.id().unwrap_or(0));
    let started = Transition::AgentStarted {
        agent: agent_ref,
        at: now_ms(),
    };
    let mut agent = Supervisor::start(&prepared.spec, child, own_signals);
    if let Some(turn) = turn {
        turn.agent_started();
    }
    let mut watch = Watch::new(
        run.id.clone(),
        run.attempt,
        policy.clone(),
        layout.clone(),
        run.usage,
    );
    watch.set_group(agent.pgid());
    if let Some(sandbox) = &limits.sandbox {
        watch.set_limits(sandbox.watch(dir.clone()));
    }
    let mut events = EventPump::new(
        prepared.spec.events.clone(),
        prepared.spec.attempt,
        prepared.spec.secrets.clone(),
    );
    // An agent that is done at once has its start and its events saved with
    // its end, in one transaction (unless it reported usage or asked for an
    // approval: those are acted on as stored); any other has its start saved
    // now, and its events followed.
    let mut start = None;
    // Which protections the agent got, saved with its start or its end.
    let mut sandbox_event = super::sandbox_event(&prepared.sandbox, run.attempt)
        .filter(|_| container.is_none())
        .into_iter()
        .collect::<Vec<_>>();
    let (status, batch) = match agent.exit_within(agent::START_WINDOW).await {
        Some(status) => {
            agent.reap().await;
            let batch = events.collect(&run.id, upstream, true).await;
            if batch
                .iter()
                .all(|e| !matches!(e.kind.as_str(), "usage" | "approval"))
            {
                start = Some(started); // its events go with it (below)
                sandbox_event.extend(batch);
                (status, sandbox_event)
            } else {
                save_start(store, layout, run, &started, false).await?;
                crate::record::append_events(store, &run.id, &sandbox_event).await;
                crate::record::append_events(store, &run.id, &batch).await;
                (status, batch)
            }
        }
        None => {
            save_start(store, layout, run, &started, true).await?;
            crate::record::append_events(store, &run.id, &sandbox_event).await;
            let status = agent
                .until_exit(store, &run.id, &mut events, &mut watch, upstream)
                .await;
            agent.reap().await;
            (status, events.pump(store, &run.id, upstream, true).await)
        }
    };
    watch.agent_gone();
    // Nothing of the attempt outlives its agent: what left its process
    // group (a `setsid`, a daemon) dies with the run's group.
    if let Some(tree) = prepared.sandbox.tree() {
        tree.kill();
    }
    if let Some((reason, retryable)) = events.refused.take() {
        watch.refuse(reason, retryable);
    }
    watch.observe(store, &batch, false).await;
    watch.expire_pending(store).await;

    collect::record_artifacts(store, layout, &run.id, &prepared, log).await;
    super::shared::push_state(store, run, &prepared, layout, state, log).await;
    if let Some((name, file, pulled)) = session_state
        && let Err(e) = super::session_file::push(store, &file, name, pulled, &run.id).await
    {
        log.line(&format!("could not save session {name}'s file: {e}"));
    }
    let container_failure = match &container {
        Some(plan) => {
            let reason =
                crate::container::finish(plan, status.as_ref().ok(), agent.signalled).await;
            if let Ok(p) = parcel {
                let r = &p.manifest.resources;
                super::resources::record_container(store, &run.id, run.attempt, plan, r).await;
            }
            reason
        }
        None => None,
    };
    let code = status.map(os::exit_code_of).unwrap_or(1);
    // A limit that explains a failure (out of memory, …) is its reason.
    let limit_reason = limits.end(store, &run.id, run.attempt, code).await;
    // Whether someone asked the run to stop matters only when the agent
    // failed (a stop then cancels it); the run as saved is current enough
    // for the rest (a write on a stale version reloads it).
    if code != 0 && !agent.signalled {
        *run = store.get_run(&run.id).await?;
    }
    let stop_requested = agent.signalled || run.stop_requested_at.is_some();
    // The agent's own files stay in the run's directory: masked there too.
    collect::mask_file(&prepared.output_path, &prepared.spec.secrets);
    collect::mask_file(&prepared.spec.events, &prepared.spec.secrets);
    let output = collect::read_output(&prepared.output_path, events.last_output.take())
        .map(|v| super::agent::mask_value(v, &prepared.spec.secrets));
    let at = now_ms();
    let failure = |reason: String, status: Status| AttemptFailure {
        reason,
        exit_code: Some(code),
        status,
    };
    let end = match watch.verdict.clone() {
        Some(
            Verdict::Budget(reason) | Verdict::Limit(reason) | Verdict::Handoff(reason, false),
        ) => End::Final(
            Transition::Fail {
                reason,
                exit_code: Some(code),
                at,
            },
            output,
        ),
        Some(Verdict::Handoff(reason, true)) => End::Retryable(
            Transition::Fail {
                reason: reason.clone(),
                exit_code: Some(code),
                at,
            },
            failure(reason, Status::Failed),
            output,
        ),
        Some(Verdict::TimedOut(reason)) => End::Retryable(
            Transition::TimeOut {
                reason: reason.clone(),
                exit_code: Some(code),
                at,
            },
            failure(reason, Status::TimedOut),
            output,
        ),
        None if stop_requested && code != 0 => End::Final(cancelled(Some(code)), output),
        None if code == 0 => match events.wait.take() {
            Some(wait) => End::Suspend(wait),
            None => End::Final(Transition::Exited { code, at }, output),
        },
        None => {
            let reason = limit_reason
                .clone()
                .or_else(|| events.error.clone())
                .unwrap_or_else(|| dispatch_core::state::exit_reason(code));
            let t = Transition::Fail {
                reason: reason.clone(),
                exit_code: Some(code),
                at,
            };
            let declared_final =
                limit_reason.is_some() || (events.error.is_some() && !events.error_retryable);
            if declared_final || run.operation == Operation::Service {
                End::Final(t, output)
            } else {
                End::Retryable(t, failure(reason, Status::Failed), output)
            }
        }
    };
    // The container runtime could not run it (or the memory limit killed
    // it): another attempt would fare no better.
    let end = match (container_failure, end) {
        (Some(reason), End::Final(_, output) | End::Retryable(_, _, output)) => End::Final(
            Transition::Fail {
                reason,
                exit_code: Some(code),
                at,
            },
            output,
        ),
        (_, end) => end,
    };
    Ok(Ended {
        end,
        checkpoint: watch.checkpoint,
        start: start.map(|start| Unsaved {
            start,
            events: batch,
        }),
    })
}

/// Saves the agent's start. While the agent is `live`, a failure to save
/// kills it, and a stop asked for while it was starting (which found no
/// process group to signal) is passed on now.
async fn save_start<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    started: &Transition,
    live: bool,
) -> RuntimeResult<()> {
    let Transition::AgentStarted { agent, .. } = started else {
        return Ok(());
    };
    let signal = |s| live && os::signal_group(agent.pid, s);
    if let Err(e) = advance(store, run, started, None).await {
        signal(Signal::SIGKILL);
        return Err(match e {
            AdvanceError::Store(e) => e.into(),
            AdvanceError::Illegal(e) => RuntimeError::Io {
                what: "recording the agent start of",
                path: layout.log(&run.id),
                source: std::io::Error::other(e.to_string()),
            },
        });
    }
    // The run as saved says whether a stop arrived meanwhile.
    if run.stop_requested_at.is_some() {
        signal(Signal::SIGTERM);
    }
    Ok(())
}

/// The run leaves this process unfinished (a retry or a wake comes later):
/// a worker removes its workspace, since the queue may give the next attempt
/// to any worker (which starts from a fresh copy); a local helper's next
/// attempt, on this machine, finds it as it was.
fn leave_workspace(layout: &Layout, run: &Run, host: Host, keep: bool) {
    if host.leased && !keep {
        crate::workspace::release(layout, &run.id);
    }
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}
