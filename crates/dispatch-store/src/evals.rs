//! Eval reports (`dispatch eval --host`): each eval's whole JSON report,
//! kept by the cluster so `GET /v1/evals/{id}` shows it and a later eval
//! can compare with it (`--baseline`).

use async_trait::async_trait;
use dispatch_core::Ts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreResult;

/// One eval as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub id: String,
    pub parcel_digest: String,
    pub parcel_name: String,
    pub created_at: Ts,
    /// The report as `dispatch eval --format json` prints it.
    pub report: Value,
}

/// Keeping and finding eval reports.
#[async_trait]
pub trait EvalStore: Send + Sync {
    /// Stores a new eval; `false` when its id was taken (the first is kept).
    async fn put_eval(&self, eval: &EvalRecord) -> StoreResult<bool>;

    /// At most `limit` evals whose id starts with `prefix`, by id.
    async fn evals_with_prefix(&self, prefix: &str, limit: u32) -> StoreResult<Vec<EvalRecord>>;

    /// The newest eval of a parcel whose digest starts with `digest`.
    async fn latest_eval_of(&self, digest: &str) -> StoreResult<Option<EvalRecord>>;
}
