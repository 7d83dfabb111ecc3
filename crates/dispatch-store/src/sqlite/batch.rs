//! [`crate::BatchStore`] on SQLite: one `BEGIN IMMEDIATE` transaction.

use async_trait::async_trait;

use super::SqliteStore;
use crate::{BatchItem, BatchStore, Created, StoreResult};

#[async_trait]
impl BatchStore for SqliteStore {
    async fn enqueue_batch(
        &self,
        batch: &[BatchItem],
        briefs: &[(String, Vec<u8>)],
    ) -> StoreResult<Vec<Created>> {
        self.write(|tx| {
            for (sha256, bytes) in briefs {
                super::parcels::put_brief(tx, sha256, bytes)?;
            }
            batch
                .iter()
                .map(|i| super::queue::enqueue_with(tx, &i.new, &i.extras, &i.options, i.dedupe))
                .collect()
        })
    }
}
