//! [`crate::ParcelCatalog`] on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction};

use super::{Fail, SqliteStore};
use crate::{ParcelCatalog, ParcelEntry, ParcelRemoval, StoreResult};

fn list(tx: &Transaction<'_>) -> Result<Vec<ParcelEntry>, Fail> {
    Ok(tx
        .prepare_cached(
            "SELECT digest, name, manifest, created_at FROM parcels
             ORDER BY created_at DESC, digest",
        )?
        .query_map([], |row| {
            Ok(ParcelEntry {
                digest: row.get(0)?,
                name: row.get(1)?,
                manifest: row.get(2)?,
                created_at: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

fn remove(tx: &Transaction<'_>, digest: &str) -> Result<ParcelRemoval, Fail> {
    let found: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM parcels WHERE digest = ?1")?
        .query_row([digest], |row| row.get(0))
        .optional()?;
    if found.is_none() {
        return Ok(ParcelRemoval::NotFound);
    }
    let users: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM runs WHERE parcel_digest = ?1
             AND status NOT IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped')
             ORDER BY id LIMIT 5",
        )?
        .query_map([digest], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if !users.is_empty() {
        return Ok(ParcelRemoval::InUse(users));
    }
    tx.prepare_cached("DELETE FROM parcels WHERE digest = ?1")?
        .execute([digest])?;
    Ok(ParcelRemoval::Removed)
}

fn prune(tx: &Transaction<'_>) -> Result<Vec<String>, Fail> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM parcels AS p
             WHERE EXISTS (SELECT 1 FROM parcels n WHERE n.name = p.name
                           AND (n.created_at > p.created_at
                                OR (n.created_at = p.created_at AND n.digest > p.digest)))
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.parcel_digest = p.digest)
             RETURNING digest",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?)
}

#[async_trait]
impl ParcelCatalog for SqliteStore {
    async fn list_parcels(&self) -> StoreResult<Vec<ParcelEntry>> {
        self.read(list)
    }

    async fn remove_parcel(&self, digest: &str) -> StoreResult<ParcelRemoval> {
        self.write(|tx| remove(tx, digest))
    }

    async fn prune_parcels(&self) -> StoreResult<Vec<String>> {
        self.write(prune)
    }
}
