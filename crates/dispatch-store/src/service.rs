//! Service state: the configuration, schedules and listeners of a `service`
//! run, persisted with the run so that a restarted service resumes them.
//!
//! One row per service run, written whole (a single-row upsert). Only the
//! service's own helper writes it after `dispatch serve` created it, so there
//! is no compare-and-set token; deleting the run deletes the row.

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreResult;

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
    pub updated_at: Ts,
}

/// Service state rows (an opt-in capability, next to [`crate::Store`]).
#[async_trait]
pub trait ServiceStore: Send + Sync {
    /// Inserts or replaces the service state of `state.run_id` in one
    /// statement. `NotFound` when the run does not exist.
    async fn put_service_state(&self, state: &ServiceState) -> StoreResult<()>;

    /// The service state of `run`; `None` when it has none (a job, or an
    /// unknown run).
    async fn get_service_state(&self, run: &RunId) -> StoreResult<Option<ServiceState>>;
}
