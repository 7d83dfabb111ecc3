//! Service state: the configuration, schedules and listeners of a `service`
//! run, persisted with the run so that a restarted service resumes them.
//!
//! One row per service run. A local service's row is written whole by its
//! own helper ([`ServiceStore::put_service_state`]). A cluster service (one
//! with a `name`) has no helper: every `dispatch server` may fire its timers
//! and take its webhooks, so each change goes through
//! [`ServiceStore::fire_service`], a compare-and-set on `updated_at` that
//! creates the wakes' heartbeat runs in the same transaction — a fire is
//! taken by exactly one server, and a server dying mid-fire leaves either
//! everything or nothing. Deleting the run deletes the row.

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{NewRun, QueueOptions, Run, StoreResult};

/// What a service run persists besides its run record. The three documents
/// are owned by the runtime (`dispatch-runtime`'s service module); the store
/// keeps them as JSON without looking inside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub run_id: RunId,
    /// How the service was asked to run (wake sources, overlap policy, ingress policy).
    pub config: Value,
    /// Each schedule's expression, `next_fire_at`, `last_fired_at`, payload.
    pub schedules: Value,
    /// Each listener's `bound_addr`, `requests_handled`, `last_request_at`.
    pub listeners: Value,
    /// Also the compare-and-set token of [`ServiceStore::fire_service`].
    pub updated_at: Ts,
    /// The name a cluster service is served under (`/hooks/<name>/…`):
    /// unique among running services. `None` for a local service.
    #[serde(default)]
    pub name: Option<String>,
}

/// One heartbeat run a service wake creates, queued for the workers.
#[derive(Clone, Debug)]
pub struct QueuedWake {
    pub run: NewRun,
    pub options: QueueOptions,
    /// What it is dispatched with beyond [`NewRun`] (a concurrency key
    /// holding the service's wakes to its overlap policy).
    pub extras: crate::RunExtras,
}

/// Service state rows (an opt-in capability, next to [`crate::Store`]).
#[async_trait]
pub trait ServiceStore: Send + Sync {
    /// Inserts or replaces the service state of `state.run_id` in one
    /// statement. `NotFound` when the run does not exist;
    /// `ServiceNameTaken` when `state.name` is held by another running
    /// service (a name held by a service that is no longer running is taken
    /// over).
    async fn put_service_state(&self, state: &ServiceState) -> StoreResult<()>;

    /// The service state of `run`; `None` when it has none (a job, or an
    /// unknown run).
    async fn get_service_state(&self, run: &RunId) -> StoreResult<Option<ServiceState>>;

    /// Replaces the state of `state.run_id` if its stored `updated_at` is
    /// still `expected` and the service is `running`, and creates `wakes`
    /// (queued) in the same transaction. `None` when another writer came
    /// first or the service is no longer running: nothing was written.
    async fn fire_service(
        &self,
        state: &ServiceState,
        expected: Ts,
        wakes: &[QueuedWake],
    ) -> StoreResult<Option<Vec<Run>>>;

    /// The states of every running service that has a name (the cluster's
    /// services), by name.
    async fn named_services(&self) -> StoreResult<Vec<ServiceState>>;

    /// The state of the running service named `name`.
    async fn service_named(&self, name: &str) -> StoreResult<Option<ServiceState>>;

    /// Records that the webhook of `service` took the delivery `key` (a
    /// signature, a delivery id), remembered until `expires_at`. `false` when
    /// it is already remembered (a replay): nothing is written then. Forgets
    /// deliveries expired by `now` on the way, so the table stays small. Two
    /// servers racing with the same delivery: one gets `true`.
    async fn claim_delivery(
        &self,
        service: &str,
        key: &str,
        expires_at: Ts,
        now: Ts,
    ) -> StoreResult<bool>;

    /// Forgets the delivery `key` of `service` (its wake was refused, so the
    /// sender may retry it).
    async fn release_delivery(&self, service: &str, key: &str) -> StoreResult<()>;
}
