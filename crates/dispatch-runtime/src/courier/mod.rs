//! Couriers: what carries a run's parcel to execution, one file each.
//!
//! | Courier (`FROM`) | Module | What an attempt is |
//! |---|---|---|
//! | `process` | `process` | the parcel's COMMAND as a child process group, supervised until it exits |
//! | `image <ref>` | `image` | the COMMAND in a container, through podman (or docker); the rest is the process courier's |
//! | `agent` | `agent` | the native model loop inside this helper or worker ([`crate::helper::native`]) |
//! | `agent` with a COMPONENT | `wasm` | the agent's WASM guest in a sandboxed engine (`crate::wasm`) |
//! | `workflow` | `workflow` | the coordinator of the parcel's members (`crate::workflow`), each member's turn a child run |
//! | `noop` | `noop` | nothing: the run starts and succeeds at once (benchmarks, wiring tests) |
//!
//! `one_attempt` prepares the run (verifies the brief, lays out its
//! directory and environment), picks the courier from the parcel and drives
//! it. A courier returns how the attempt ended as a value (`Ended`); the
//! caller (`crate::helper`'s attempt loop) saves it, requeues the run for
//! another try, or suspends it.

mod agent;
mod image;
pub mod noop;
mod process;
mod wasm;
mod workflow;

use std::sync::Arc;

use dispatch_core::parcel::{Courier as Kind, Parcel};
use dispatch_core::{NewEvent, Status, Transition, now_ms};
use dispatch_store::{Run, Store};
use serde_json::Value;

use crate::error::RuntimeResult;
use crate::helper::retry::AttemptFailure;
use crate::helper::shared::Pulled;
use crate::helper::{LifecycleLog, Prepared, agent as agent_io, cancelled, prepare};
use crate::layout::Layout;

/// What carries one attempt of a run to its end. A courier is a value made
/// for the attempt (what it needs beyond the [`Attempt`] is in it) and used
/// once.
pub(crate) trait Courier {
    /// Runs the attempt to its end: how it ended, as a value the caller
    /// saves. `Err` only when the store cannot be written.
    async fn carry<S: Store + ?Sized>(
        self,
        store: &S,
        attempt: Box<Attempt<'_>>,
    ) -> RuntimeResult<Ended>;
}

/// What a courier is handed: the claimed run, prepared for this attempt.
pub(crate) struct Attempt<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) run: &'a mut Run,
    pub(crate) log: &'a mut LifecycleLog,
    /// The run's parcel, loaded once for every attempt.
    pub(crate) parcel: &'a Parcel,
    /// The run directory, environment and sandbox of this attempt.
    pub(crate) prepared: Prepared,
    pub(crate) ctx: &'a Context<'a>,
}

/// Runs the current attempt of a claimed (`starting`) run to its end: the
/// run is prepared, then its parcel's courier carries it.
pub(crate) async fn one_attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    ctx: &Context<'_>,
) -> RuntimeResult<Ended> {
    if run.stop_requested_at.is_some() {
        return Ok(ended(End::Final(cancelled(None), None)));
    }
    let prepared = ctx.parcel.map_err(String::clone).and_then(|parcel| {
        prepare(layout, run, parcel, ctx.traceparent).map(|prepared| (parcel, prepared))
    });
    let (parcel, mut prepared) = match prepared {
        Ok(p) => p,
        Err(reason) => return Ok(ended(End::Final(fail(reason), None))),
    };
    log.mask_also(&prepared.spec.secrets);
    prepared.shared = ctx.shared.cloned();
    // Boxed: moved by value, each courier's future would hold it twice.
    let attempt = Box::new(Attempt {
        layout,
        run,
        log,
        parcel,
        prepared,
        ctx,
    });
    // Each courier's attempt is a future of its own size, on the heap: a
    // run holds the state of the courier that carries it, not of the
    // largest one (an async fn's state is as large as its largest branch).
    match parcel.manifest.courier {
        Kind::Noop => Box::pin(noop::Noop.carry(store, attempt)).await,
        Kind::Workflow => Box::pin(workflow::Workflow.carry(store, attempt)).await,
        Kind::Agent if parcel.manifest.component.is_some() => {
            Box::pin(wasm::Wasm.carry(store, attempt)).await
        }
        Kind::Agent => Box::pin(agent::Agent.carry(store, attempt)).await,
        Kind::Image => Box::pin(image::Image.carry(store, attempt)).await,
        Kind::Process => Box::pin(process::Process::bare().carry(store, attempt)).await,
    }
}

impl Attempt<'_> {
    /// The parcel's state as the cluster has it (see
    /// [`crate::helper::shared`]), before the agent starts. An error ends
    /// the attempt: another may fare better.
    async fn pull_state(&mut self) -> Result<Option<Pulled>, Ended> {
        let name = &self.parcel.manifest.name;
        let pulled = crate::helper::shared::pull_state(&self.prepared, self.layout, name, self.log);
        pulled.await.map_err(|reason| {
            let failure = AttemptFailure {
                reason: reason.clone(),
                exit_code: None,
                status: Status::Failed,
            };
            ended(End::Retryable(fail(reason), failure, None))
        })
    }

    /// Gives the parcel's state back to the cluster after the agent.
    async fn push_state<S: Store + ?Sized>(&mut self, store: &S, pulled: Option<Pulled>) {
        let (run, prepared, layout) = (&*self.run, &self.prepared, self.layout);
        crate::helper::shared::push_state(store, run, prepared, layout, pulled, self.log).await;
    }
}

/// An attempt that ends before its agent starts.
pub(crate) fn ended(end: End) -> Ended {
    Ended {
        end,
        checkpoint: None,
        start: None,
    }
}

/// The run fails for `reason`, with no exit code (nothing ran).
pub(crate) fn fail(reason: String) -> Transition {
    Transition::Fail {
        reason,
        exit_code: None,
        at: now_ms(),
    }
}

/// How one attempt ended.
pub(crate) enum End {
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
    pub(crate) fn masked(self, secrets: &[String]) -> End {
        if secrets.is_empty() {
            return self;
        }
        let output = |o: Option<Value>| o.map(|v| agent_io::mask_value(v, secrets));
        match self {
            End::Final(t, o) => End::Final(mask_transition(t, secrets), output(o)),
            End::Retryable(t, mut failure, o) => {
                failure.reason = agent_io::mask(&failure.reason, secrets);
                End::Retryable(mask_transition(t, secrets), failure, output(o))
            }
            End::Suspend(wait) => End::Suspend(agent_io::mask_value(wait, secrets)),
        }
    }
}

/// `t` with every secret value masked in its reason.
fn mask_transition(mut t: Transition, secrets: &[String]) -> Transition {
    if let Some(reason) = t.reason_mut() {
        *reason = agent_io::mask(reason, secrets);
    }
    t
}

/// How one attempt went.
pub(crate) struct Ended {
    pub(crate) end: End,
    /// The last checkpoint the attempt wrote.
    pub(crate) checkpoint: Option<Value>,
    /// The agent's start, when it is not saved yet (see [`agent_io::START_WINDOW`]).
    pub(crate) start: Option<Unsaved>,
}

/// A quick agent's start, saved with the attempt's end: the start and the
/// events the agent wrote go in the same transaction as the end.
pub(crate) struct Unsaved {
    pub(crate) start: Transition,
    /// Saved right after the start.
    pub(crate) events: Vec<NewEvent>,
}

impl Unsaved {
    pub(crate) fn start(start: Transition) -> Self {
        Unsaved {
            start,
            events: Vec::new(),
        }
    }
}

/// What every attempt of a run shares.
pub(crate) struct Context<'a> {
    pub(crate) policy: &'a dispatch_core::policy::RunPolicy,
    pub(crate) session: Option<&'a str>,
    pub(crate) own_signals: bool,
    pub(crate) parcel: Result<&'a Parcel, &'a String>,
    pub(crate) upstream: &'a dyn crate::handoff::Upstream,
    /// A worker holds the run (a workflow's members go to the queue).
    pub(crate) leased: bool,
    pub(crate) briefs: Option<&'a dyn crate::workflow::BriefSink>,
    /// The worker that runs the member runs it has room for itself.
    pub(crate) here: Option<&'a dyn crate::workflow::RunHere>,
    pub(crate) traceparent: &'a str,
    /// The cluster's shared artifact store (see [`crate::helper::shared`]).
    pub(crate) shared: Option<&'a Arc<crate::objects::Objects>>,
    /// A workflow member's signal to its coordinator.
    pub(crate) turn: Option<&'a crate::workflow::TurnSignal>,
}

pub(crate) fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}
