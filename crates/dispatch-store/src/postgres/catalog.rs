//! [`crate::ParcelCatalog`] on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::{Fail, PgStore};
use crate::{ParcelCatalog, ParcelEntry, ParcelRemoval, StoreResult};

/// The statuses of runs that have not ended, in SQL.
const LIVE: &str = "status NOT IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped')";

async fn list(tx: &Transaction<'_>) -> Result<Vec<ParcelEntry>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT digest, name, manifest, created_at FROM parcels
             ORDER BY created_at DESC, digest",
        )
        .await?;
    let mut out = Vec::new();
    for row in tx.query(&stmt, &[]).await? {
        out.push(ParcelEntry {
            digest: row.try_get(0)?,
            name: row.try_get(1)?,
            manifest: row.try_get(2)?,
            created_at: row.try_get(3)?,
        });
    }
    Ok(out)
}

async fn remove(tx: &Transaction<'_>, digest: &str) -> Result<ParcelRemoval, Fail> {
    // The parcel's row first: a run created meanwhile waits for this
    // transaction, and then finds no parcel.
    let stmt = tx
        .prepare_cached("SELECT 1 FROM parcels WHERE digest = $1 FOR UPDATE")
        .await?;
    if tx.query_opt(&stmt, &[&digest]).await?.is_none() {
        return Ok(ParcelRemoval::NotFound);
    }
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE parcel_digest = $1 AND {LIVE} ORDER BY id LIMIT 5"
        ))
        .await?;
    let users: Vec<String> = tx
        .query(&stmt, &[&digest])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if !users.is_empty() {
        return Ok(ParcelRemoval::InUse(users));
    }
    let stmt = tx
        .prepare_cached("DELETE FROM parcels WHERE digest = $1")
        .await?;
    tx.execute(&stmt, &[&digest]).await?;
    Ok(ParcelRemoval::Removed)
}

async fn prune(tx: &Transaction<'_>) -> Result<Vec<String>, Fail> {
    let stmt = tx
        .prepare_cached(
            "DELETE FROM parcels p
             WHERE EXISTS (SELECT 1 FROM parcels n WHERE n.name = p.name
                           AND (n.created_at, n.digest) > (p.created_at, p.digest))
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.parcel_digest = p.digest)
             RETURNING digest",
        )
        .await?;
    Ok(tx
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

#[async_trait]
impl ParcelCatalog for PgStore {
    async fn list_parcels(&self) -> StoreResult<Vec<ParcelEntry>> {
        in_tx!(self, |tx| list(&tx))
    }

    async fn remove_parcel(&self, digest: &str) -> StoreResult<ParcelRemoval> {
        in_tx!(self, |tx| remove(&tx, digest))
    }

    async fn prune_parcels(&self) -> StoreResult<Vec<String>> {
        in_tx!(self, |tx| prune(&tx))
    }
}
