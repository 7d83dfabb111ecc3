//! A WASM agent's attempt (`FROM dispatch/wasm`): the parcel's component
//! runs on a thread of its own (see [`crate::wasm::guest`]) while this task
//! answers its host calls ([`super::wasm_serve`]) and watches the run as a
//! native agent's attempt does: a stop, a signal, TIMEOUT RUN, budgets.
//! Events, billing, the log and the output are the native agent's: the
//! guest's model and tool calls are recorded as `model_call` and
//! `tool_call` events, its answer (the last assistant message of its turn)
//! is the run's output, its stdout and stderr go to the run's log.
//!
//! A guest keeps its state in memory: a new attempt starts its turn anew
//! (the calls an earlier attempt sent and never recorded are billed first).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dispatch_agent::{LoopEnd, Message, NoTools, SessionData, Tools};
use dispatch_core::{NewEvent, ProcRef, Status, Transition, now_ms};
use dispatch_store::{Run, Store};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use super::native::{NativeCtx, RunSink, failure, loop_config, masked, recv};
use super::retry::AttemptFailure;
use super::watch::{Verdict, Watch};
use super::{LifecycleLog, cancelled};
use crate::courier::{End, Ended, ended, fail};
use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::native::CancelGuard;
use crate::os;
use crate::record::advance;
use crate::wasm::abi::{ConversationMessage, LocalTool};
use crate::wasm::guest::{self, Ask, Call, Grant, GuestEnd};
use crate::wasm::guest_abi::{GuestEvent, GuestSession, Operation, ParcelContext};

/// How often deadlines are looked at while the guest runs.
const TICK: Duration = Duration::from_millis(100);
/// The memory cap when the Agentfile sets no `RESOURCES memory=`.
const DEFAULT_MEMORY: u64 = 256 << 20;
/// The key of the guest's `backend-state` in the session's record.
const BACKEND_STATE: &str = "wasm_backend_state";

enum Outcome {
    Guest(GuestEnd),
    Host(LoopEnd),
    Stopped,
    TimedOut(String),
}

/// Runs the current attempt of a claimed WASM agent's run to its end.
pub(crate) async fn attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    ctx: &NativeCtx<'_>,
) -> RuntimeResult<Ended> {
    let final_fail = |reason: String| Ok(ended(End::Final(fail(reason), None)));
    let Some(component) = ctx.parcel.manifest.component.as_ref() else {
        return final_fail("the parcel has no COMPONENT (build it again)".into());
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut cfg = match loop_config(ctx.parcel, &ctx.prepared.brief_context, ctx.policy, env) {
        Ok(cfg) => cfg,
        Err(reason) => return final_fail(format!("refusing to start: {reason}")),
    };
    cfg.used = run.usage;
    let mut secrets = ctx.prepared.spec.secrets.clone();
    secrets.extend(cfg.models.iter().filter_map(|m| m.key.clone()));
    log.mask_also(&secrets);
    let (lost, lines) =
        super::native_billing::bill_lost_calls(store, &run.id, &cfg.models, &secrets).await;
    for line in lines {
        log.line(&line);
    }
    cfg.used.add(lost);

    // The component, compiled (or its compilation reused).
    let entry = ctx
        .parcel
        .manifest
        .files
        .iter()
        .find(|f| f.path == component.path);
    let sha = entry.map(|f| f.sha256.clone()).unwrap_or_default();
    let path = ctx.parcel.files_dir().join(&component.path);
    // Compiled components, by SHA-256 and engine (reused by later runs).
    let cache = layout.root().join("cache").join("wasm");
    let fuel = ctx.parcel.manifest.agent.as_ref().and_then(|a| a.max_fuel);
    let fuel_used = Arc::new(AtomicU64::new(0));
    let compiled = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || crate::wasm::load(&path, &sha, &cache, fuel.is_some()))
            .await
    };
    let compiled = match compiled {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return final_fail(e),
        Err(e) => return final_fail(format!("cannot compile the component: {e}")),
    };

    // The session: its history and the guest's state.
    let session = match ctx.session {
        Some(key) => match store.get_session(key).await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("cannot read session {key}: {e}");
                return Ok(ended(End::Retryable(fail(why.clone()), failure(why), None)));
            }
        },
        None => None,
    };
    let session_version = session.as_ref().map_or(0, |s| s.version);
    let history = session
        .as_ref()
        .and_then(|s| serde_json::from_value::<SessionData>(s.data.clone()).ok())
        .unwrap_or_default();
    let backend_state = session
        .as_ref()
        .and_then(|s| s.data.get(BACKEND_STATE)?.as_str().map(str::to_string));

    // The tools, as a native agent's.
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
    let tool_box = match super::native_tools::start(ctx.parcel, tool_ctx).await {
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
    let memory_bytes = ctx
        .parcel
        .manifest
        .resources
        .memory_bytes
        .unwrap_or(DEFAULT_MEMORY);
    let mut bom = super::native_tools::bom(ctx.parcel, &cfg.models, tool_box.as_ref(), ctx.policy);
    bom["component"] = json!({
        "path": component.path, "abi": component.abi,
        "sha256": entry.map(|f| f.sha256.clone()), "memory_bytes": memory_bytes,
        "fuel": fuel,
    });
    let mut started_events = vec![NewEvent::of(
        dispatch_core::RunEvent::Bom(bom),
        run.attempt,
        now_ms(),
    )];
    if tool_box.is_some() {
        log.line(&ctx.prepared.sandbox.applied.line());
        started_events.extend(super::sandbox_event(&ctx.prepared.sandbox, run.attempt));
    }
    if let Err(e) = store.append_events(&run.id, &started_events).await {
        log.line(&format!("could not record the bill of materials: {e}"));
    }
    let no_tools = NoTools;
    let tools: &dyn Tools = match &tool_box {
        Some(t) => t,
        None => &no_tools,
    };
    let primary = &cfg.models[0].model;
    log.line(&format!(
        "run {} attempt {}: WASM agent {} ({} KiB), model {} ({})",
        run.id,
        run.attempt,
        component.path,
        entry.map_or(0, |f| f.size / 1024),
        primary.name,
        primary.provider,
    ));

    // What the guest is given.
    let m = &ctx.parcel.manifest;
    let prompt = dispatch_agent::prompt::system_prompt(&m.instructions);
    let user = dispatch_agent::prompt::user_text(&run.payload);
    let declared = m
        .agent
        .as_ref()
        .map(|a| a.tools.as_slice())
        .unwrap_or_default();
    let parcel_ctx = ParcelContext {
        parcel_digest: ctx.parcel.digest.clone(),
        entrypoint: Some(m.entrypoint.to_string()),
        prompt: prompt.clone(),
        local_tools: declared
            .iter()
            .map(|t| LocalTool {
                alias: t.name.clone(),
                description: t.description.clone(),
                input_schema_json: t.schema.as_ref().map(Value::to_string),
            })
            .collect(),
        primary_model: Some(primary.name.clone()),
    };
    let operation = match run.operation {
        dispatch_core::Operation::Chat => Operation::Chat(user.clone()),
        dispatch_core::Operation::Heartbeat => {
            Operation::Heartbeat((!user.trim().is_empty()).then(|| user.clone()))
        }
        _ => Operation::Job(user.clone()),
    };
    let call = Call {
        parcel: parcel_ctx,
        session: GuestSession {
            turn_count: history
                .messages
                .iter()
                .filter(|m| m.role == dispatch_agent::Role::User)
                .count() as u64,
            history: history
                .messages
                .iter()
                .filter(|m| m.tool_calls.is_empty() && m.tool_call_id.is_none())
                .map(|m| ConversationMessage {
                    role: super::wasm_serve::role_name(&m.role).to_string(),
                    content: m.content.clone(),
                })
                .collect(),
            backend_state: backend_state.clone(),
        },
        operation,
        open: backend_state.is_none(),
    };
    let grant_env: Vec<(String, String)> = m
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(
            m.env_passthrough
                .iter()
                .filter_map(|k| Some((k.clone(), std::env::var(k).ok()?))),
        )
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let grant = Grant {
        env: grant_env,
        workspace: ctx.prepared.spec.cwd.clone(),
        log: layout.log(&run.id),
        memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
        fuel,
        fuel_used: fuel_used.clone(),
        stop: stop.clone(),
    };

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
    if let Some(agent) = &m.agent {
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
    let (ask_tx, mut ask_rx) = mpsc::channel::<Ask>(1);
    let (entered_tx, entered_rx) = oneshot::channel();
    let mut guest_end = match guest::spawn(compiled, grant, call, ask_tx, entered_tx) {
        Ok(rx) => rx,
        Err(e) => return final_fail(e),
    };
    let programs: HashMap<String, String> = declared
        .iter()
        .filter_map(|t| match &t.kind {
            dispatch_core::tool::ToolKind::Local { program, .. } => {
                Some((t.name.clone(), program.clone()))
            }
            _ => None,
        })
        .collect();
    let mut start_error = None;
    let (run_id, attempt) = (run.id.clone(), run.attempt);
    let outcome = {
        let save_start = async {
            advance(store, run, &started, None)
                .await
                .map(|()| run.stop_requested_at.is_some())
        };
        tokio::pin!(save_start);
        let mut serve = super::wasm_serve::Serve {
            cfg: &cfg,
            sink: &mut sink,
            tools,
            memory: &memory,
            programs,
            chains: HashMap::new(),
            calls: 0,
            rounds: 0,
            used: cfg.used,
            prompt,
        };
        let mut saved = false;
        let mut tick = tokio::time::interval(TICK);
        let entered = async {
            if let Ok(us) = entered_rx.await {
                // The guest's first export entered (µs since the epoch): what
                // `dispatch-bench wasm` measures against a process agent's start.
                let at = i64::try_from(us / 1_000).unwrap_or(i64::MAX);
                let event = NewEvent::of(
                    dispatch_core::RunEvent::GuestStarted(json!({"at_us": us})),
                    attempt,
                    at,
                );
                let _ = store.append_events(&run_id, &[event]).await;
            }
            std::future::pending::<()>().await
        };
        tokio::pin!(entered);
        let outcome = loop {
            tokio::select! {
                biased;
                end = &mut guest_end => break Outcome::Guest(end.unwrap_or(GuestEnd::Stopped)),
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
                _ = &mut entered => {}
                Some(ask) = ask_rx.recv() => {
                    // Answered while the run is watched: a stop or a
                    // timeout drops the call in flight.
                    let answered = async {
                        let mut tick = tokio::time::interval(TICK);
                        let answer = serve.answer(ask);
                        tokio::pin!(answer);
                        loop {
                            tokio::select! {
                                biased;
                                end = &mut answer => return Ok(end),
                                _ = guard.notify.notified() => return Err(Outcome::Stopped),
                                Some(()) = recv(&mut term) => return Err(Outcome::Stopped),
                                Some(()) = recv(&mut int) => return Err(Outcome::Stopped),
                                _ = tick.tick() => {
                                    let waiting = approver.waiting.load(Ordering::SeqCst);
                                    watch.set_paused(waiting > 0);
                                    watch.tick(store).await;
                                    if let Some(Verdict::TimedOut(reason)) = watch.verdict.clone() {
                                        return Err(Outcome::TimedOut(reason));
                                    }
                                }
                            }
                        }
                    };
                    match answered.await {
                        Ok(None) => {}
                        Ok(Some(end)) => break Outcome::Host(end),
                        Err(outcome) => break outcome,
                    }
                }
                _ = tick.tick() => {
                    watch.tick(store).await;
                    if let Some(Verdict::TimedOut(reason)) = watch.verdict.clone() {
                        break Outcome::TimedOut(reason);
                    }
                }
            }
        };
        if !saved && let Err(e) = save_start.await {
            start_error = Some(e.to_string());
        }
        outcome
    };
    // The guest ends at its next epoch tick, or as its host call is dropped.
    stop.store(true, Ordering::SeqCst);
    drop(ask_rx);
    let guest_ended = match &outcome {
        Outcome::Guest(_) => None,
        _ => tokio::time::timeout(Duration::from_secs(5), &mut guest_end)
            .await
            .ok(),
    };
    if guest_ended.is_none() && !matches!(outcome, Outcome::Guest(_)) {
        log.line("the guest did not end within 5s of its stop");
    }
    if let Some(e) = start_error {
        return final_fail(format!("could not record the agent start: {e}"));
    }
    if let Some(t) = tool_box {
        t.shutdown().await;
        if let Some(tree) = ctx.prepared.sandbox.tree() {
            tree.kill();
        }
        super::collect::record_artifacts(store, layout, &run.id, ctx.prepared, log).await;
    }
    let finish = match &outcome {
        Outcome::Stopped => Some("stopped"),
        Outcome::TimedOut(_) => Some("timed_out"),
        _ => None,
    };
    if let (Some(finish), Some((sent, bytes))) = (finish, sink.take_in_flight()) {
        let id = sent["id"].as_str().unwrap_or_default();
        if !super::native_billing::recorded(store, &run.id, id).await {
            let why = format!(
                "the run was {} mid-call; billed an estimate",
                finish.replace('_', " ")
            );
            let bill = dispatch_agent::billing::unfinished(&sent, bytes, finish, &why, &cfg.models);
            if let Err(e) = dispatch_agent::Sink::record(&mut sink, bill).await {
                log.line(&format!("could not bill the call in flight: {e}"));
            }
        }
    }
    let end = match outcome {
        Outcome::Guest(GuestEnd::Turn(turn)) => {
            let mut answer = String::new();
            let mut said = Vec::new();
            let mut warnings = Vec::new();
            for event in &turn.events {
                match event {
                    GuestEvent::Message(m) if m.role == "assistant" => {
                        answer = m.content.clone();
                        said.push(Message::assistant(m.content.clone(), Vec::new()));
                    }
                    GuestEvent::Message(_) => {}
                    GuestEvent::TextDelta(t) => dispatch_agent::Sink::delta(&mut sink, t),
                    GuestEvent::BackendFallback(f) => warnings.push(dispatch_core::RunEvent::Warning(
                        json!({"message": format!("the guest fell back from {}: {}", f.backend, f.error)}),
                    )),
                }
            }
            if !warnings.is_empty() {
                let _ = dispatch_agent::Sink::record(&mut sink, warnings).await;
            }
            if let Some(key) = ctx.session {
                let mut messages = history.messages.clone();
                messages.push(Message::user(user.clone()));
                messages.extend(said);
                let data = SessionData {
                    messages,
                    compacted: history.compacted,
                };
                let mut value = serde_json::to_value(&data).unwrap_or(Value::Null);
                if let Some(state) = &turn.backend_state {
                    value[BACKEND_STATE] = json!(state);
                }
                let value = masked(&value, &sink.secrets);
                super::wasm_session::save(store, key, value, session_version, &run.id, log).await;
            }
            let output = dispatch_agent::prompt::output_of(&answer);
            End::Final(
                Transition::Exited {
                    code: 0,
                    at: now_ms(),
                },
                Some(masked(&output, &sink.secrets)),
            )
        }
        Outcome::Guest(GuestEnd::Refused(e)) => {
            End::Final(fail(format!("the guest failed its turn: {e}")), None)
        }
        Outcome::Guest(GuestEnd::Memory(why)) => End::Final(fail(why), None),
        Outcome::Guest(GuestEnd::Fuel(limit)) => End::Final(
            fail(format!(
                "budget_exceeded: fuel: the guest burned its LIMIT FUEL of {limit} (hint: raise LIMIT FUEL, or look for a loop in the guest)"
            )),
            None,
        ),
        Outcome::Guest(GuestEnd::Instantiate(e)) => End::Final(
            fail(format!(
                "cannot instantiate the component {}: {e}",
                component.path
            )),
            None,
        ),
        Outcome::Guest(GuestEnd::Trap(e)) => {
            End::Final(fail(format!("the guest trapped: {e}")), None)
        }
        Outcome::Guest(GuestEnd::Stopped) => {
            End::Final(fail("the guest ended without an answer".into()), None)
        }
        Outcome::Stopped => End::Final(cancelled(None), None),
        Outcome::TimedOut(reason) => End::Retryable(
            Transition::TimeOut {
                reason: reason.clone(),
                exit_code: None,
                at: now_ms(),
            },
            AttemptFailure {
                reason,
                exit_code: None,
                status: Status::TimedOut,
            },
            None,
        ),
        Outcome::Host(LoopEnd::Failed { reason, retryable }) => {
            let t = fail(reason.clone());
            match retryable && run.operation != dispatch_core::Operation::Service {
                true => End::Retryable(t, failure(reason), None),
                false => End::Final(t, None),
            }
        }
        Outcome::Host(
            LoopEnd::Budget(reason) | LoopEnd::ToolRounds(reason) | LoopEnd::OverQuota(reason),
        ) => End::Final(fail(reason), None),
        Outcome::Host(LoopEnd::Answered { .. } | LoopEnd::Suspended(_)) => {
            End::Final(fail("the host ended the guest's turn".into()), None)
        }
    };
    sink.end_text();
    drop(guard);
    limits.end(store, &run.id, run.attempt, 0).await;
    if let Some(limit) = fuel {
        // What the guest burned: the attempt's `resources`, as RESOURCES'
        // usage is for a process (`inspect-run` shows it).
        let data = json!({
            "limits": [{"limit": "fuel", "value": limit.to_string(), "how": "wasmtime"}],
            "fuel_used": fuel_used.load(Ordering::SeqCst),
            "measured_by": "wasmtime fuel",
        });
        let event = NewEvent::new(
            dispatch_core::EventKind::Resources,
            run.attempt,
            now_ms(),
            data,
        );
        if let Err(e) = store.append_events(&run.id, &[event]).await {
            log.line(&format!("could not record the guest's fuel: {e}"));
        }
    }
    Ok(Ended {
        end,
        checkpoint: None,
        start: None,
    })
}
