//! Many runs enqueued at once (`POST /v1/runs/batch`): one transaction for
//! the whole batch, so it is all or none, and one commit instead of one per
//! run. An opt-in capability next to [`crate::QueueStore`]; both backends
//! provide it.

use async_trait::async_trait;

use crate::{Created, NewRun, QueueOptions, RunExtras, StoreResult};

/// One run of a batch, as [`crate::QueueStore::enqueue_with`] takes it.
#[derive(Clone, Debug)]
pub struct BatchItem {
    pub new: NewRun,
    pub extras: RunExtras,
    pub options: QueueOptions,
    /// Answer a live or succeeded run of the same idempotency key instead.
    pub dedupe: bool,
}

#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Stores `briefs` (SHA-256, bytes) as
    /// [`crate::ParcelStore::put_brief`] does, then enqueues every item as
    /// [`crate::QueueStore::enqueue_with`] does, in order, all in one
    /// transaction: an error leaves nothing. Answers one [`Created`] per
    /// item (an item whose key matches an earlier item's answers that run).
    async fn enqueue_batch(
        &self,
        batch: &[BatchItem],
        briefs: &[(String, Vec<u8>)],
    ) -> StoreResult<Vec<Created>>;
}
