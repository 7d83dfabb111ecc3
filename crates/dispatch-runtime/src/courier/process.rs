//! The process courier (`FROM process`): the parcel's COMMAND as a child
//! process group, fed its payload, its output copied to the run's log, its
//! events followed, watched for deadlines, budgets and limits until it
//! exits; then its artifacts, output and exit decide how the attempt ended.
//! The image courier ([`super::image`]) is this one with a container's
//! client as the child.

use std::path::PathBuf;

use dispatch_core::{Operation, Status, Transition, now_ms};
use dispatch_store::{Run, Store};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::process::Child;

use super::{Attempt, Courier, End, Ended, Unsaved, ended, set_env};
use crate::container::Plan;
use crate::error::{RuntimeError, RuntimeResult};
use crate::helper::agent::{self, EventPump, Supervisor};
use crate::helper::resources::AttemptLimits;
use crate::helper::retry::{self, AttemptFailure};
use crate::helper::watch::{Verdict, Watch};
use crate::helper::{collect, sandbox_event, session_file as session_sync};
use crate::layout::Layout;
use crate::os;
use crate::record::{AdvanceError, advance};
use crate::submit::session_file;

/// The process courier; with `container`, the image courier.
pub(crate) struct Process {
    container: bool,
}

impl Process {
    /// The COMMAND as a child of this process.
    pub(crate) fn bare() -> Self {
        Process { container: false }
    }

    /// The COMMAND in a container (see [`super::image`]).
    pub(crate) fn in_container() -> Self {
        Process { container: true }
    }
}

/// The session's file (`--session`) as pulled from the store before the
/// attempt: pushed back after it.
struct Session<'a> {
    name: &'a str,
    file: PathBuf,
    pulled: (i64, Option<String>),
}

impl Courier for Process {
    async fn carry<S: Store + ?Sized>(
        self,
        store: &S,
        mut a: Box<Attempt<'_>>,
    ) -> RuntimeResult<Ended> {
        let (layout, parcel, ctx) = (a.layout, a.parcel, a.ctx);
        let state = match a.pull_state().await {
            Ok(state) => state,
            Err(ended) => return Ok(ended),
        };
        let session = set_up(store, &mut a).await;
        a.log.line(&format!(
            "run {} attempt {}: starting {} `{}`",
            a.run.id,
            a.run.attempt,
            a.run.operation,
            a.prepared.spec.command.join(" ")
        ));
        // The container courier starts its runtime's client instead.
        let container = match self.container {
            true => match super::image::plan(layout, a.run, parcel, &a.prepared.spec) {
                Ok(plan) => Some(plan),
                Err(reason) => return Ok(ended(End::Final(super::fail(reason), None))),
            },
            false => None,
        };
        // A container's RESOURCES are the runtime's container limits.
        let (id, attempt) = (a.run.id.clone(), a.run.attempt);
        let own = Some(parcel).filter(|_| container.is_none());
        let mut limits = AttemptLimits::begin(&id, attempt, own, a.log, ctx.own_signals);
        if container.is_none() {
            a.log.line(&a.prepared.sandbox.applied.line());
        }
        let child = match start(&mut a, container.as_ref(), &limits) {
            Ok(child) => child,
            Err(t) => return Ok(ended(End::Final(t, None))),
        };
        let ran = supervise(store, &mut a, child, &limits, container.is_some()).await?;
        let Ran {
            status,
            batch,
            start,
            mut watch,
            mut events,
            signalled,
        } = ran;
        collect::record_artifacts(store, layout, &id, &a.prepared, a.log).await;
        a.push_state(store, state).await;
        if let Some(Session { name, file, pulled }) = session
            && let Err(e) = session_sync::push(store, &file, name, pulled, &id).await
        {
            a.log
                .line(&format!("could not save session {name}'s file: {e}"));
        }
        let container_failure = match &container {
            Some(plan) => {
                let reason = crate::container::finish(plan, status.as_ref().ok(), signalled).await;
                let r = &parcel.manifest.resources;
                crate::helper::resources::record_container(store, &id, attempt, plan, r).await;
                reason
            }
            None => None,
        };
        let code = status.map(os::exit_code_of).unwrap_or(1);
        // A limit that explains a failure (out of memory, …) is its reason.
        let limit_reason = limits.end(store, &id, attempt, code).await;
        // Whether someone asked the run to stop matters only when the agent
        // failed (a stop then cancels it); the run as saved is current enough
        // for the rest (a write on a stale version reloads it).
        if code != 0 && !signalled {
            *a.run = store.get_run(&id).await?;
        }
        // The agent's own files stay in the run's directory: masked there too.
        let prepared = &a.prepared;
        let secrets = &prepared.spec.secrets;
        collect::mask_file(&prepared.output_path, secrets);
        collect::mask_file(&prepared.spec.events, secrets);
        let output = collect::read_output(&prepared.output_path, events.last_output.take())
            .map(|v| agent::mask_value(v, secrets));
        let seen = Seen {
            verdict: watch.verdict.take(),
            code,
            stop_requested: signalled || a.run.stop_requested_at.is_some(),
            wait: events.wait.take(),
            error: events.error.take(),
            error_retryable: events.error_retryable,
            limit_reason,
            service: a.run.operation == Operation::Service,
            container_failure,
        };
        Ok(Ended {
            end: seen.end(output, now_ms()),
            checkpoint: watch.checkpoint,
            start: start.map(|start| Unsaved {
                start,
                events: batch,
            }),
        })
    }
}

/// Points the agent at this attempt's files: its own events file, the
/// checkpoint and the wake it resumes from, and the session's file as the
/// store has it (another worker may have run the last turn).
async fn set_up<'a, S: Store + ?Sized>(store: &S, a: &mut Attempt<'a>) -> Option<Session<'a>> {
    let (layout, run, log) = (a.layout, &*a.run, &mut *a.log);
    let dir = layout.run_dir(&run.id);
    let spec = &mut a.prepared.spec;
    if run.attempt > 1 {
        // Each attempt has its own events file.
        spec.events = dir.join(format!("events.{}.jsonl", run.attempt));
        set_env(
            &mut spec.env,
            "DISPATCH_EVENTS",
            &spec.events.to_string_lossy(),
        );
    }
    let _ = std::fs::remove_file(&a.prepared.output_path); // an earlier attempt's result
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
    let name = a.ctx.session?;
    let file = session_file(layout, name)?;
    if let Some(parent) = file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let pulled = session_sync::pull(store, &file, name).await;
    // Made by the helper: a sandboxed agent must be able to write them.
    if let (Some(owner), Some(parent)) = (
        crate::sandbox::owner::of_courier(a.prepared.courier),
        file.parent(),
    ) {
        let _ = crate::sandbox::owner::give(parent, owner);
        if file.exists() {
            let _ = crate::sandbox::owner::give(&file, owner);
        }
    }
    set_env(
        &mut spec.env,
        "DISPATCH_SESSION_FILE",
        &file.to_string_lossy(),
    );
    Some(Session { name, file, pulled })
}

/// Starts the agent (or its container's client); an error is how the run
/// ends, as the shell would say it (127: not found, 126: cannot run).
fn start(
    a: &mut Attempt<'_>,
    container: Option<&Plan>,
    limits: &AttemptLimits,
) -> Result<Child, Transition> {
    let prepared = &a.prepared;
    let spawned = match container {
        Some(plan) => super::image::spawn(
            a.layout,
            a.run,
            plan,
            &prepared.spec,
            &prepared.sandbox,
            a.log,
        ),
        None => agent::spawn(&prepared.spec, limits.sandbox.as_ref(), &prepared.sandbox),
    };
    spawned.map_err(|e| {
        let code = match e.kind() == std::io::ErrorKind::NotFound {
            true => 127,
            false => 126,
        };
        let hint = match prepared.sandbox.applied.on && e.kind() != std::io::ErrorKind::NotFound {
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
        Transition::Fail {
            reason,
            exit_code: Some(code),
            at: now_ms(),
        }
    })
}

/// What supervising the agent until it exited left.
struct Ran {
    status: std::io::Result<std::process::ExitStatus>,
    /// Its last events (with its start when that is not saved yet).
    batch: Vec<dispatch_core::NewEvent>,
    /// Its start, when it is saved with the end (a quick agent).
    start: Option<Transition>,
    watch: Watch,
    events: EventPump,
    /// This process was asked to stop while the agent ran.
    signalled: bool,
}

/// Supervises the started agent until it exits, following its events and
/// enforcing the run's policy; nothing of the attempt outlives it.
async fn supervise<S: Store + ?Sized>(
    store: &S,
    a: &mut Attempt<'_>,
    child: Child,
    limits: &AttemptLimits,
    in_container: bool,
) -> RuntimeResult<Ran> {
    let (layout, run, ctx, prepared) = (a.layout, &mut *a.run, a.ctx, &a.prepared);
    let started = Transition::AgentStarted {
        agent: os::proc_ref(child.id().unwrap_or(0)),
        at: now_ms(),
    };
    let mut agent = Supervisor::start(&prepared.spec, child, ctx.own_signals);
    if let Some(turn) = ctx.turn {
        turn.agent_started();
    }
    let mut watch = Watch::new(
        run.id.clone(),
        run.attempt,
        ctx.policy.clone(),
        layout.clone(),
        run.usage,
    );
    watch.set_group(agent.pgid());
    if let Some(sandbox) = &limits.sandbox {
        watch.set_limits(sandbox.watch(layout.run_dir(&run.id)));
    }
    let mut events = EventPump::new(
        prepared.spec.events.clone(),
        prepared.spec.attempt,
        prepared.spec.secrets.clone(),
    );
    events.network = prepared.egress.as_ref().map(|p| p.recorder());
    // An agent that is done at once has its start and its events saved with
    // its end, in one transaction (unless it reported usage or asked for an
    // approval: those are acted on as stored); any other has its start saved
    // now, and its events followed.
    let mut start = None;
    // Which protections the agent got, saved with its start or its end.
    let mut protections = sandbox_event(&prepared.sandbox, run.attempt)
        .filter(|_| !in_container)
        .into_iter()
        .collect::<Vec<_>>();
    let upstream = ctx.upstream;
    let (status, batch) = match agent.exit_within(agent::START_WINDOW).await {
        Some(status) => {
            agent.reap().await;
            let batch = events.collect(&run.id, upstream, true).await;
            if batch
                .iter()
                .all(|e| !matches!(e.kind.as_str(), "usage" | "approval"))
            {
                start = Some(started); // its events go with it
                protections.extend(batch);
                (status, protections)
            } else {
                save_start(store, layout, run, &started, false).await?;
                crate::record::append_events(store, &run.id, &protections).await;
                crate::record::append_events(store, &run.id, &batch).await;
                (status, batch)
            }
        }
        None => {
            save_start(store, layout, run, &started, true).await?;
            crate::record::append_events(store, &run.id, &protections).await;
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
    Ok(Ran {
        status,
        batch,
        start,
        watch,
        events,
        signalled: agent.signalled,
    })
}

/// What the attempt's end is decided from, once its agent is gone.
struct Seen {
    /// Why the runtime ended the attempt, if it did.
    verdict: Option<Verdict>,
    code: i32,
    stop_requested: bool,
    /// The agent asked to suspend (its `wait` event).
    wait: Option<Value>,
    /// The agent's last `error` event, and whether it allows a retry.
    error: Option<String>,
    error_retryable: bool,
    /// A `RESOURCES` limit that explains a failure.
    limit_reason: Option<String>,
    /// A service's run: a failure is final (the service restarts it).
    service: bool,
    /// The container runtime could not run it (or its memory limit killed
    /// it): another attempt would fare no better.
    container_failure: Option<String>,
}

impl Seen {
    /// How the attempt ended, with `output` (a pure function of what was seen).
    fn end(self, output: Option<Value>, at: dispatch_core::Ts) -> End {
        let code = self.code;
        let fail = |reason: String| Transition::Fail {
            reason,
            exit_code: Some(code),
            at,
        };
        let failure = |reason: String, status: Status| AttemptFailure {
            reason,
            exit_code: Some(code),
            status,
        };
        let end = match self.verdict {
            Some(
                Verdict::Budget(reason) | Verdict::Limit(reason) | Verdict::Handoff(reason, false),
            ) => End::Final(fail(reason), output),
            Some(Verdict::Handoff(reason, true)) => End::Retryable(
                fail(reason.clone()),
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
            None if self.stop_requested && code != 0 => {
                End::Final(crate::helper::cancelled(Some(code)), output)
            }
            None if code == 0 => match self.wait {
                Some(wait) => End::Suspend(wait),
                None => End::Final(Transition::Exited { code, at }, output),
            },
            None => {
                let declared_final =
                    self.limit_reason.is_some() || (self.error.is_some() && !self.error_retryable);
                let reason = self
                    .limit_reason
                    .or(self.error)
                    .unwrap_or_else(|| dispatch_core::state::exit_reason(code));
                match declared_final || self.service {
                    true => End::Final(fail(reason), output),
                    false => End::Retryable(
                        fail(reason.clone()),
                        failure(reason, Status::Failed),
                        output,
                    ),
                }
            }
        };
        match (self.container_failure, end) {
            (Some(reason), End::Final(_, output) | End::Retryable(_, _, output)) => {
                End::Final(fail(reason), output)
            }
            (_, end) => end,
        }
    }
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
