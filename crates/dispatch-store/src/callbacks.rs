//! The callback outbox: a run created with a callback URL gets a row; once
//! the run has finished, any server claims the row for a while, delivers, and
//! marks it done. A server that dies mid-delivery leaves the row to be
//! claimed again when the hold runs out (delivery is at least once).

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};

use crate::StoreResult;

/// A callback due: the run has finished and nobody is delivering it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueCallback {
    pub run_id: RunId,
    pub url: String,
}

/// The callback outbox.
#[async_trait]
pub trait CallbackStore: Send + Sync {
    /// Takes up to `limit` callbacks of finished runs that are not done and
    /// not held, holding each until `now + hold_ms`.
    async fn claim_callbacks(
        &self,
        now: Ts,
        hold_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<DueCallback>>;

    /// Marks the run's callback delivered (or given up on).
    async fn finish_callback(&self, run: &RunId, at: Ts) -> StoreResult<()>;
}
