//! Admission and execution of wakes. Each admitted wake is created at once as
//! a `queued` heartbeat run (so an HTTP caller gets its id in the 202) and
//! started by its own detached helper (`dispatch internal run-record`, in its
//! own session) when the overlap policy gives it a slot.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use dispatch_core::{NewEvent, Operation, RunId, Transition, now_ms};
use dispatch_store::{Run, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::model::{Overlap, ServiceConfig};
use crate::error::RuntimeError;
use crate::launch::{LaunchRequest, create, create_in_session, fail_unstarted};
use crate::layout::{Layout, ROOT_ENV};
use crate::record::advance;

/// Why a service wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    Schedule,
    Interval,
    Manual,
    Http,
    Recovery,
    /// An A2A message (`serve --a2a`): its input is the run's payload as it is.
    A2a,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Schedule => "schedule",
            Reason::Interval => "interval",
            Reason::Manual => "manual",
            Reason::Http => "http",
            Reason::Recovery => "recovery",
            Reason::A2a => "a2a",
        }
    }
}

/// The answer to a wake.
#[derive(Debug)]
pub(super) enum Reply {
    /// A heartbeat run was created; it runs now or when its turn comes.
    Accepted(RunId),
    /// The overlap policy dropped it.
    Busy(String),
    /// The heartbeat could not be created.
    Failed(String),
}

/// One wake on its way in.
pub(super) struct Wake {
    pub reason: Reason,
    /// Extra fields for the envelope's `wake` object (schedule, scheduled_for, …).
    pub detail: Value,
    pub payload: Value,
    /// The HTTP request envelope, for `http` wakes.
    pub request: Option<Value>,
    /// The timer that fired, so that a timer is never queued twice.
    pub timer: Option<usize>,
    /// The session the heartbeat run binds (a name under the service's
    /// parcel): an A2A context's conversation, carried from task to task.
    pub session: Option<String>,
    pub reply: Option<oneshot::Sender<Reply>>,
}

struct Pending {
    run: Run,
    timer: Option<usize>,
}

/// The wakes of one service: waiting and running.
pub(super) struct Core {
    pub service: Run,
    pub layout: Layout,
    pub exe: PathBuf,
    pub config: ServiceConfig,
    pending: VecDeque<Pending>,
    pub running: JoinSet<(RunId, std::io::Result<ExitStatus>)>,
    /// The heartbeat runs of `running`'s helpers.
    in_flight: HashSet<RunId>,
}

impl Core {
    pub fn new(service: Run, layout: Layout, exe: PathBuf, config: ServiceConfig) -> Self {
        Core {
            service,
            layout,
            exe,
            config,
            pending: VecDeque::new(),
            running: JoinSet::new(),
            in_flight: HashSet::new(),
        }
    }

    fn busy(&self) -> bool {
        self.running.len() as u32 >= self.config.max_concurrent.max(1)
    }

    /// Whether the wakes going now fill the policy's slots. A heartbeat
    /// whose run has ended does not count while its helper tidies up: a
    /// wake sent right after `dispatch wait` saw the last one end is taken
    /// (it starts once that helper is gone).
    async fn busy_now<S: Store + ?Sized>(&mut self, store: &S) -> bool {
        while let Some(done) = self.running.try_join_next() {
            if let Ok(done) = done {
                self.finished(store, done).await;
            }
        }
        if !self.busy() {
            return false;
        }
        // The wakes taken but not started yet count as going.
        let mut going = self.pending.len();
        for id in &self.in_flight {
            match store.get_run(id).await {
                Ok(run) if run.state.is_terminal() => {}
                _ => going += 1,
            }
        }
        going as u64 >= u64::from(self.config.max_concurrent.max(1))
    }

    /// Decides about `wake` under the overlap policy; an accepted wake
    /// becomes a heartbeat run, started now if a slot is free.
    pub async fn admit<S: Store + ?Sized>(&mut self, store: &S, wake: &Wake) -> Reply {
        if self.busy_now(store).await {
            let refused = match self.config.overlap {
                Overlap::Skip => Some("a wake is already running (overlap: skip)".to_string()),
                _ if wake.timer.is_some() && self.pending.iter().any(|p| p.timer == wake.timer) => {
                    Some("this timer's previous wake is still waiting".to_string())
                }
                _ if self.pending.len() as u32 >= self.config.max_pending => Some(format!(
                    "{} wakes are already waiting (hint: raise --max-pending)",
                    self.pending.len()
                )),
                _ => None,
            };
            if let Some(why) = refused {
                self.event(
                    store,
                    "wake_skipped",
                    json!({"reason": wake.reason.as_str(), "why": why}),
                )
                .await;
                return Reply::Busy(why);
            }
        }
        let at = now_ms();
        let mut info = json!({
            "reason": wake.reason.as_str(),
            "service_run_id": self.service.id,
            "at": at,
        });
        if let (Some(o), Some(extra)) = (info.as_object_mut(), wake.detail.as_object()) {
            o.extend(extra.clone());
        }
        let mut envelope = json!({"wake": info, "payload": wake.payload});
        if let Some(request) = &wake.request {
            envelope["request"] = request.clone();
        }
        if wake.reason == Reason::A2a {
            // The message is the task: the agent gets it as its input, as
            // `dispatch run` would give it (the wake's details are in the
            // service's `wake` event).
            envelope = wake.payload.clone();
        }
        let req = LaunchRequest {
            source: self.service.parcel_digest.clone(),
            operation: Some(Operation::Heartbeat),
            payload: envelope,
            parent_id: Some(self.service.id.clone()),
            origin_id: None,
            project: self.service.project.clone(),
        };
        let created = match &wake.session {
            Some(name) => create_in_session(store, &self.layout, &req, name).await,
            None => create(store, &self.layout, &req).await,
        };
        let run = match created {
            Ok((run, _)) => run,
            Err(RuntimeError::Store(StoreError::SessionBusy { run, .. })) => {
                // One task at a time per conversation: the next waits for
                // the caller to send it again.
                let why = format!("its conversation is in use by task {run} until that ends");
                return Reply::Busy(why);
            }
            Err(e) => {
                let why = format!("could not create the heartbeat run: {e}");
                crate::say_warn!("[dispatch] wake {}: {why}", wake.reason.as_str());
                return Reply::Failed(why);
            }
        };
        let mut data = json!({"reason": wake.reason.as_str(), "heartbeat_run_id": run.id});
        if let (Some(o), Some(extra)) = (data.as_object_mut(), wake.detail.as_object()) {
            o.extend(extra.clone());
        }
        self.event(store, "wake", data).await;
        let id = run.id.clone();
        self.pending.push_back(Pending {
            run,
            timer: wake.timer,
        });
        self.start_ready(store).await;
        Reply::Accepted(id)
    }

    /// Starts waiting heartbeats while the policy has free slots.
    pub async fn start_ready<S: Store + ?Sized>(&mut self, store: &S) {
        while !self.busy() {
            let Some(next) = self.pending.pop_front() else {
                return;
            };
            match self.spawn(&next.run.id) {
                Ok(mut child) => {
                    let id = next.run.id.clone();
                    crate::say_info!("[dispatch] heartbeat {id} started");
                    self.in_flight.insert(id.clone());
                    self.running.spawn(async move { (id, child.wait().await) });
                }
                Err(e) => {
                    let reason = format!("could not start the heartbeat helper: {e}");
                    crate::say_warn!("[dispatch] heartbeat {}: {reason}", next.run.id);
                    let _ = fail_unstarted(store, &next.run, reason).await;
                }
            }
        }
    }

    fn spawn(&self, id: &RunId) -> std::io::Result<tokio::process::Child> {
        let log_path = self.layout.log(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(["internal", "run-record", id.as_str()])
            .env(ROOT_ENV, self.layout.root())
            // The shared secret may have come through the environment; no
            // wake (and so no agent) ever sees it.
            .env_remove(super::config::SHARED_SECRET_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The wake's helper moves itself into its own session at once, so a
        // SIGTERM to the service never reaches a wake that is finishing;
        // `dispatch stop` ends it after the grace period.
        tokio::process::Command::from(cmd).spawn()
    }

    /// Logs how a heartbeat ended.
    pub async fn finished<S: Store + ?Sized>(
        &mut self,
        store: &S,
        done: (RunId, std::io::Result<ExitStatus>),
    ) {
        let (id, _) = done;
        self.in_flight.remove(&id);
        match store.get_run(&id).await {
            Ok(run) => {
                let how = match (run.state.exit_code(), run.state.reason()) {
                    (_, Some(reason)) => format!("{}: {reason}", run.status()),
                    (Some(code), None) => format!("{} (exit {code})", run.status()),
                    (None, None) => run.status().to_string(),
                };
                crate::say_info!("[dispatch] heartbeat {id} {how}");
            }
            Err(e) => crate::say_warn!("[dispatch] heartbeat {id}: {e}"),
        }
        self.start_ready(store).await;
    }

    /// Cancels the wakes that never got their turn.
    pub async fn cancel_pending<S: Store + ?Sized>(&mut self, store: &S) {
        while let Some(p) = self.pending.pop_front() {
            let mut run = p.run;
            let t = Transition::Cancel {
                reason: "the service stopped before this wake ran".into(),
                exit_code: None,
                at: now_ms(),
            };
            if let Err(e) = advance(store, &mut run, &t, None).await {
                crate::say_warn!("[dispatch] could not cancel heartbeat {}: {e}", run.id);
            }
        }
    }

    pub async fn event<S: Store + ?Sized>(&self, store: &S, kind: &str, data: Value) {
        let e = NewEvent::new(kind, self.service.attempt, now_ms(), data);
        if let Err(e) = store.append_events(&self.service.id, &[e]).await {
            crate::say_warn!("[dispatch] could not record a {kind} event: {e}");
        }
    }
}
