//! Services owned by the cluster (`DISPATCH_HOST=… dispatch serve`): no
//! helper process holds them. The service run is `running` with no process
//! (pid 0) and a name, unique among running services; its timers are fired
//! and its webhook (`/hooks/<name>/<path>`) is taken by whichever server
//! gets there first. Every change — a timer fired, a request or manual wake
//! counted — is one compare-and-set on the service's state that queues the
//! wakes' heartbeat runs (children of the service) in the same transaction
//! ([`ServiceStore::fire_service`]): a due time is fired once across any
//! number of servers, and a server dying mid-fire loses and duplicates
//! nothing. The heartbeats go through the queue to the workers.
//!
//! - [`timers`]: each server's loop that fires due timers.
//! - [`overlap`]: the overlap policy (skip, queue, concurrent) wakes obey.

pub mod overlap;
pub mod timers;

use dispatch_core::EventKind;
use std::sync::Arc;

use dispatch_core::brief::Brief;
use dispatch_core::parcel::Parcel;
use dispatch_core::{NewEvent, Operation, ProcRef, RunId, Status, Transition, Ts, now_ms};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_runtime::service::ServiceDoc;
use dispatch_store::{
    Capacity, QueueOptions, QueuedWake, Run, RunFilter, StateWrite, StoreError, StoreResult,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::SharedStore;
use crate::fetch::FetchError;

/// How often a change that lost its compare-and-set is tried again.
const ATTEMPTS: usize = 50;

/// The process a cluster service "runs" as: none.
pub const NO_PROCESS: ProcRef = ProcRef {
    pid: 0,
    start_ticks: 0,
};

/// One wake on its way to becoming a heartbeat run.
#[derive(Clone, Debug)]
pub struct WakeSpec {
    /// `schedule`, `interval`, `manual`, `http`, `recovery` or `a2a`.
    pub reason: &'static str,
    /// Extra fields of the envelope's `wake` object.
    pub detail: Value,
    pub payload: Value,
    /// The HTTP request envelope, for `http` wakes.
    pub request: Option<Value>,
    /// The session the heartbeat binds (a name under the service's parcel):
    /// an A2A context's conversation.
    pub session: Option<String>,
}

/// Why a wake was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error("service {0} is not running (hint: `dispatch restart {0}` brings it back)")]
    NotRunning(RunId),
    #[error("{0}")]
    Parcel(String),
    /// The overlap policy dropped it.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What cluster-service work needs: the store, this server's directory,
/// and the in-process workers' wake-up.
#[derive(Clone)]
pub struct Services {
    pub store: SharedStore,
    pub layout: Layout,
    pub wake: Arc<Notify>,
    /// Where the traces of services stopped here go.
    pub tracer: Option<crate::otel::Tracer>,
    /// The cluster's object store, where big parcels' archives are.
    pub archives: Option<Arc<dispatch_runtime::objects::Objects>>,
}

impl Services {
    /// Changes the service `id` with `change` (given the decoded state and
    /// now; it returns the wakes to queue) under a compare-and-set, tried
    /// again on a conflict. `None` when `change` had nothing to do.
    pub async fn change<F>(&self, id: &RunId, mut change: F) -> Result<Option<Vec<Run>>, WakeError>
    where
        F: FnMut(&mut ServiceDoc, Ts) -> Vec<WakeSpec>,
    {
        for _ in 0..ATTEMPTS {
            let Some(saved) = self.store.get_service_state(id).await? else {
                return Err(WakeError::NotRunning(id.clone()));
            };
            let service = self.store.get_run(id).await?;
            if service.status() != Status::Running || saved.name.is_none() {
                return Err(WakeError::NotRunning(id.clone()));
            }
            let mut doc = ServiceDoc::decode(&saved).map_err(WakeError::Parcel)?;
            let now = now_ms();
            let specs = change(&mut doc, now);
            if specs.is_empty() {
                return Ok(None);
            }
            let (running, queued) = self.live_wakes(id).await?;
            let admission = overlap::admit(&doc.config, running, &queued, specs);
            overlap::count_handled(&mut doc, &admission.admitted, now);
            overlap::count_refused(&mut doc, &admission.refused, now);
            let specs = admission.admitted;
            let key = overlap::key(&service, &doc.config);
            let wakes = self.heartbeats(&service, &specs, key, now).await?;
            let mut next = doc.encode(id, now.max(saved.updated_at + 1));
            next.name = saved.name.clone();
            let Some(runs) = self
                .store
                .fire_service(&next, saved.updated_at, &wakes)
                .await?
            else {
                continue; // another server came first: look again
            };
            self.wake.notify_one();
            let mut events: Vec<NewEvent> = specs
                .iter()
                .zip(&runs)
                .map(|(spec, run)| {
                    let mut data = json!({"reason": spec.reason, "heartbeat_run_id": run.id});
                    extend(&mut data, &spec.detail);
                    NewEvent::new(EventKind::Wake, service.attempt, now, data)
                })
                .collect();
            events.extend(admission.refused.iter().map(|(spec, why)| {
                let data = json!({"reason": spec.reason, "why": why});
                NewEvent::new(EventKind::WakeSkipped, service.attempt, now, data)
            }));
            if let Err(e) = self.store.append_events(id, &events).await {
                tracing::warn!("[dispatch] service {id}: could not record its wakes: {e}");
            }
            if runs.is_empty()
                && let Some((_, why)) = admission.refused.into_iter().next()
            {
                return Err(WakeError::Busy(why));
            }
            return Ok(Some(runs));
        }
        Err(WakeError::Store(StoreError::Conflict {
            id: id.clone(),
            expected: 0,
        }))
    }

    /// One wake of the service `id` (manual or HTTP): its heartbeat run.
    /// An HTTP wake counts as a request handled.
    pub async fn wake(&self, id: &RunId, spec: WakeSpec) -> Result<Run, WakeError> {
        let runs = self.change(id, |_, _| vec![spec.clone()]).await?;
        runs.and_then(|mut r| r.pop())
            .ok_or_else(|| WakeError::NotRunning(id.clone()))
    }

    /// The wakes of service `id` still live: how many started, and those
    /// still queued.
    async fn live_wakes(&self, id: &RunId) -> StoreResult<(usize, Vec<Run>)> {
        let filter = RunFilter {
            parent_id: Some(id.clone()),
            statuses: vec![
                Status::Queued,
                Status::Created,
                Status::Starting,
                Status::Running,
                Status::Paused,
            ],
            ..RunFilter::default()
        };
        let live = self.store.list_runs(&filter).await?;
        let (queued, started): (Vec<Run>, Vec<Run>) = live
            .into_iter()
            .partition(|r| matches!(r.status(), Status::Queued | Status::Created));
        Ok((started.len(), queued))
    }

    /// Counts a webhook request of service `id` answered with anything but
    /// 202 (as local ingress counts it). Best effort: a lost race is
    /// tried again, a store error only logged.
    pub async fn count_rejected(&self, id: &RunId) {
        for _ in 0..ATTEMPTS {
            let Ok(Some(saved)) = self.store.get_service_state(id).await else {
                return;
            };
            let Ok(mut doc) = ServiceDoc::decode(&saved) else {
                return;
            };
            let now = now_ms();
            overlap::reject_request(&mut doc, now);
            let mut next = doc.encode(id, now.max(saved.updated_at + 1));
            next.name = saved.name.clone();
            match self.store.fire_service(&next, saved.updated_at, &[]).await {
                Ok(Some(_)) => return,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("[dispatch] service {id}: cannot count a refused request: {e}");
                    return;
                }
            }
        }
    }

    /// The heartbeat runs of `specs`, with their briefs in the store, each
    /// under the service's concurrency `key`.
    async fn heartbeats(
        &self,
        service: &Run,
        specs: &[WakeSpec],
        key: dispatch_core::concurrency::RunConcurrency,
        at: Ts,
    ) -> Result<Vec<QueuedWake>, WakeError> {
        let parcel = self.parcel(&service.parcel_digest).await?;
        let mut wakes = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut info = json!({"reason": spec.reason, "service_run_id": service.id, "at": at});
            extend(&mut info, &spec.detail);
            let mut envelope = json!({"wake": info, "payload": spec.payload});
            if let Some(request) = &spec.request {
                envelope["request"] = request.clone();
            }
            if spec.reason == "a2a" {
                // The message is the task: the agent gets it as its input,
                // as on a local `serve --a2a`.
                envelope = spec.payload.clone();
            }
            let req = LaunchRequest {
                source: parcel.digest.clone(),
                operation: Some(Operation::Heartbeat),
                payload: envelope,
                parent_id: Some(service.id.clone()),
                origin_id: None,
                project: service.project.clone(),
            };
            let brief = Brief::assemble(&parcel, Operation::Heartbeat, req.payload.clone());
            let sha256 = launch::write_brief(&self.layout, &brief)
                .map_err(|e| WakeError::Parcel(e.to_string()))?;
            let (bytes, _) = brief.encode();
            self.store.put_brief(&sha256, &bytes).await?;
            wakes.push(QueuedWake {
                run: req.new_run(&parcel, Operation::Heartbeat, sha256),
                options: QueueOptions {
                    requests: Capacity::of(&parcel.manifest.resources),
                    ..QueueOptions::default()
                },
                extras: dispatch_store::RunExtras {
                    concurrency: Some(key.clone()),
                    session: spec
                        .session
                        .as_ref()
                        .map(|s| format!("{}/{s}", parcel.manifest.name)),
                    ..dispatch_store::RunExtras::default()
                },
            });
        }
        Ok(wakes)
    }

    pub(crate) async fn parcel(&self, digest: &str) -> Result<Parcel, WakeError> {
        crate::fetch::parcel(&*self.store, self.archives.as_deref(), &self.layout, digest)
            .await
            .map_err(|e| match e {
                FetchError::Refused(why) => WakeError::Parcel(why),
                FetchError::Store(e) => WakeError::Store(e),
            })
    }

    /// Stops the cluster service `run`: it ends `stopped`, and its wakes that
    /// are still queued are cancelled (running ones finish).
    pub async fn stop(&self, run: Run, reason: &str) -> StoreResult<Run> {
        let stopped = transition(
            &*self.store,
            run,
            Transition::Cancel {
                reason: reason.to_string(),
                exit_code: None,
                at: now_ms(),
            },
        )
        .await?;
        let filter = RunFilter {
            parent_id: Some(stopped.id.clone()),
            statuses: vec![Status::Queued, Status::Created],
            ..RunFilter::default()
        };
        for wake in self.store.list_runs(&filter).await? {
            let t = Transition::Cancel {
                reason: "the service stopped before this wake ran".into(),
                exit_code: None,
                at: now_ms(),
            };
            // Claimed meanwhile: it runs to its end.
            let id = wake.id.clone();
            if transition(&*self.store, wake, t).await.is_ok()
                && let Some(tracer) = &self.tracer
            {
                tracer.finished(&id);
            }
        }
        if let Some(tracer) = &self.tracer {
            tracer.finished(&stopped.id);
        }
        Ok(stopped)
    }
}

/// Whether `run` is a service the cluster owns (it has a name).
pub async fn is_cluster_service(store: &SharedStore, run: &Run) -> StoreResult<bool> {
    if run.operation != Operation::Service || run.state.helper() != Some(NO_PROCESS) {
        return Ok(false);
    }
    Ok(store
        .get_service_state(&run.id)
        .await?
        .is_some_and(|s| s.name.is_some()))
}

/// Applies `t` to `run` (one compare-and-set, with its `state` event).
pub async fn transition<S: dispatch_store::Store + ?Sized>(
    store: &S,
    run: Run,
    t: Transition,
) -> StoreResult<Run> {
    transitions(store, run, &[t]).await
}

/// Applies `ts` to `run` in order, saved at once.
pub async fn transitions<S: dispatch_store::Store + ?Sized>(
    store: &S,
    run: Run,
    ts: &[Transition],
) -> StoreResult<Run> {
    let mut state = run.state.clone();
    let mut writes = Vec::with_capacity(ts.len());
    for t in ts {
        let next = state
            .apply(run.operation, t)
            .map_err(|e| StoreError::InvalidState {
                id: run.id.clone(),
                status: e.from,
                hint: "it changed meanwhile",
            })?;
        let mut data = json!({"from": state.status(), "to": next.status()});
        if let Some(reason) = next.reason() {
            data["reason"] = json!(reason);
        }
        writes.push(StateWrite::new(
            next.clone(),
            NewEvent::new(EventKind::State, run.attempt, now_ms(), data),
        ));
        state = next;
    }
    store.transitions(&run.id, run.version, &writes).await
}

fn extend(target: &mut Value, extra: &Value) {
    if let (Some(o), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
        o.extend(extra.clone());
    }
}
