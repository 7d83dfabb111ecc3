//! The noop courier's batch finish, a capability of its own (beside
//! [`crate::QueueStore`], not in it): a worker finishes the `FROM noop`
//! runs of a claim in one transaction. Noop runs are for wiring tests and
//! benchmarks; a backend that cannot finish them in a batch leaves this
//! out and they take the one-by-one path of every courier.

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};

use crate::StoreResult;

/// Finishing noop runs in a batch.
#[async_trait]
pub trait NoopStore: Send + Sync {
    /// Finishes held runs whose agent started and exited 0 at `at` (the noop
    /// courier), in one transaction: for each run still held under its token,
    /// not asked to stop and still `starting`, the two state changes
    /// (`starting → running → succeeded`), their events and a closed attempt.
    /// Returns the runs finished; the others are left as they were.
    async fn succeed_at_once(&self, held: &[(RunId, i64)], at: Ts) -> StoreResult<Vec<RunId>>;
}
