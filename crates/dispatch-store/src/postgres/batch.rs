//! [`crate::BatchStore`] on PostgreSQL: one transaction.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::{Fail, PgStore};
use crate::{BatchItem, BatchStore, Created, StoreResult};

async fn enqueue_all(
    tx: &Transaction<'_>,
    batch: &[BatchItem],
    briefs: &[(String, Vec<u8>)],
) -> Result<Vec<Created>, Fail> {
    for (sha256, bytes) in briefs {
        super::parcels::put_brief(tx, sha256, bytes).await?;
    }
    let mut out = Vec::with_capacity(batch.len());
    for i in batch {
        out.push(super::queue::enqueue_with(tx, &i.new, &i.extras, &i.options, i.dedupe).await?);
    }
    Ok(out)
}

#[async_trait]
impl BatchStore for PgStore {
    async fn enqueue_batch(
        &self,
        batch: &[BatchItem],
        briefs: &[(String, Vec<u8>)],
    ) -> StoreResult<Vec<Created>> {
        in_tx!(self, |tx| enqueue_all(&tx, batch, briefs))
    }
}
