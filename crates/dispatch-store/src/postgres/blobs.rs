//! Objects kept in PostgreSQL (see [`crate::BlobStore`]).
//!
//! A part's write and a commit take the upload's row lock first, so parts
//! written at once keep the upload's size right; a commit takes the key's
//! row lock (or inserts it), so two commits of one key are serialized and
//! the later one deletes the earlier one's parts.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::Ts;
use tokio_postgres::Row;

use super::{Fail, PgStore};
use crate::blobs::{no_upload, too_large};
use crate::{BlobExpect, BlobMeta, BlobPart, BlobStore, MAX_BLOB, MAX_PART, StoreError};
use crate::{StoreResult, prefix_end};

fn size_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn meta(row: &Row) -> Result<BlobMeta, Fail> {
    let upload: String = row.try_get(1)?;
    Ok(BlobMeta {
        key: row.try_get(0)?,
        etag: upload.clone(),
        upload,
        size: size_of(row.try_get(2)?),
        modified_at: row.try_get(3)?,
    })
}

async fn begin(tx: &Transaction<'_>, upload: &str, at: Ts) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO blob_uploads (upload, started_at) VALUES ($1, $2)
             ON CONFLICT (upload) DO NOTHING",
        )
        .await?;
    tx.execute(&stmt, &[&upload, &at]).await?;
    Ok(())
}

async fn put_part(tx: &Transaction<'_>, upload: &str, seq: i64, bytes: &[u8]) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("SELECT size FROM blob_uploads WHERE upload = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&upload]).await? else {
        return Err(no_upload(upload).into());
    };
    let size = size_of(row.try_get(0)?);
    let stmt = tx
        .prepare_cached("SELECT len FROM blob_parts WHERE upload = $1 AND seq = $2")
        .await?;
    let replaced = match tx.query_opt(&stmt, &[&upload, &seq]).await? {
        Some(row) => size_of(row.try_get(0)?),
        None => 0,
    };
    let len = bytes.len() as u64;
    let grown = size.saturating_sub(replaced) + len;
    if grown > MAX_BLOB {
        return Err(too_large(upload, grown).into());
    }
    let len = len as i64;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO blob_parts (upload, seq, len, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (upload, seq) DO UPDATE SET len = EXCLUDED.len, data = EXCLUDED.data",
        )
        .await?;
    tx.execute(&stmt, &[&upload, &seq, &len, &bytes]).await?;
    let stmt = tx
        .prepare_cached("UPDATE blob_uploads SET size = $2 WHERE upload = $1")
        .await?;
    tx.execute(&stmt, &[&upload, &(grown as i64)]).await?;
    Ok(())
}

async fn delete_parts(tx: &Transaction<'_>, upload: &str) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM blob_parts WHERE upload = $1")
        .await?;
    tx.execute(&stmt, &[&upload]).await?;
    Ok(())
}

/// The upload the object at `key` holds now, its row locked; `None` when
/// there is no object (nothing locked: a concurrent insert may win).
async fn current(tx: &Transaction<'_>, key: &str) -> Result<Option<String>, Fail> {
    let stmt = tx
        .prepare_cached("SELECT upload FROM blobs WHERE key = $1 FOR UPDATE")
        .await?;
    Ok(match tx.query_opt(&stmt, &[&key]).await? {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

async fn commit(
    tx: &Transaction<'_>,
    key: &str,
    upload: &str,
    expect: &BlobExpect,
    at: Ts,
) -> Result<Option<BlobMeta>, Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM blob_uploads WHERE upload = $1 RETURNING size")
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&upload]).await? else {
        return Err(no_upload(upload).into());
    };
    let size: i64 = row.try_get(0)?;
    point(tx, key, upload, size, expect, at).await
}

/// Points `key` at `upload`'s parts (`size` bytes in all) if `expect`
/// holds; else deletes the parts and answers `None`.
async fn point(
    tx: &Transaction<'_>,
    key: &str,
    upload: &str,
    size: i64,
    expect: &BlobExpect,
    at: Ts,
) -> Result<Option<BlobMeta>, Fail> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO blobs (key, upload, size, modified_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    let update = tx
        .prepare_cached("UPDATE blobs SET upload = $2, size = $3, modified_at = $4 WHERE key = $1")
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&key, &upload, &size, &at];
    // An insert that finds the key taken by a concurrent commit reads it
    // again, locked this time: at most twice round.
    let mut replaced = None;
    let mut done = false;
    for _ in 0..2 {
        let now = current(tx, key).await?;
        let holds = match (expect, &now) {
            (BlobExpect::Any, _) => true,
            (BlobExpect::Absent, now) => now.is_none(),
            (BlobExpect::Etag(etag), Some(now)) => etag == now,
            (BlobExpect::Etag(_), None) => false,
        };
        if !holds {
            delete_parts(tx, upload).await?;
            return Ok(None);
        }
        if now.is_some() {
            tx.execute(&update, &params).await?;
            replaced = now;
            done = true;
            break;
        }
        if tx.execute(&insert, &params).await? == 1 {
            done = true;
            break;
        }
    }
    if !done {
        return Err(Fail::Store(StoreError::Locked {
            path: format!("object {key}"),
        }));
    }
    if let Some(old) = replaced.filter(|old| old != upload) {
        delete_parts(tx, &old).await?;
    }
    Ok(Some(written(key, upload, size, at)))
}

/// What a write of `key` as `upload` (`size` bytes, at `at`) answers.
fn written(key: &str, upload: &str, size: i64, at: Ts) -> BlobMeta {
    BlobMeta {
        key: key.to_string(),
        upload: upload.to_string(),
        size: size_of(size),
        etag: upload.to_string(),
        modified_at: at,
    }
}

/// Writes `key` as a new object of `bytes` in one statement (a call pack
/// per run, issue #38): its row and its part, or nothing when the key is
/// taken (`None`: the transaction of [`point`] decides then).
async fn put_new(
    client: &impl GenericClient,
    key: &str,
    upload: &str,
    bytes: &[u8],
    at: Ts,
) -> Result<Option<BlobMeta>, Fail> {
    let stmt = client
        .prepare_cached(
            "WITH b AS (INSERT INTO blobs (key, upload, size, modified_at) \
                        VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING 1), \
                  p AS (INSERT INTO blob_parts (upload, seq, len, data) \
                        SELECT $2, 0, $3, $5 FROM b WHERE $3 > 0) \
             SELECT count(*) FROM b",
        )
        .await?;
    let len = bytes.len() as i64;
    let row = client
        .query_one(&stmt, &[&key, &upload, &len, &at, &bytes])
        .await?;
    Ok((row.try_get::<_, i64>(0)? == 1).then(|| written(key, upload, len, at)))
}

async fn abort(tx: &Transaction<'_>, upload: &str) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM blob_uploads WHERE upload = $1")
        .await?;
    if tx.execute(&stmt, &[&upload]).await? == 1 {
        delete_parts(tx, upload).await?;
    }
    Ok(())
}

async fn head(client: &impl GenericClient, key: &str) -> Result<Option<BlobMeta>, Fail> {
    let stmt = client
        .prepare_cached("SELECT key, upload, size, modified_at FROM blobs WHERE key = $1")
        .await?;
    match client.query_opt(&stmt, &[&key]).await? {
        Some(row) => Ok(Some(meta(&row)?)),
        None => Ok(None),
    }
}

async fn parts(client: &impl GenericClient, upload: &str) -> Result<Vec<BlobPart>, Fail> {
    let stmt = client
        .prepare_cached("SELECT seq, len FROM blob_parts WHERE upload = $1 ORDER BY seq")
        .await?;
    client
        .query(&stmt, &[&upload])
        .await?
        .iter()
        .map(|row| {
            Ok(BlobPart {
                seq: row.try_get(0)?,
                len: size_of(row.try_get(1)?),
            })
        })
        .collect()
}

async fn read_part(
    client: &impl GenericClient,
    upload: &str,
    seq: i64,
) -> Result<Option<Vec<u8>>, Fail> {
    let stmt = client
        .prepare_cached("SELECT data FROM blob_parts WHERE upload = $1 AND seq = $2")
        .await?;
    match client.query_opt(&stmt, &[&upload, &seq]).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

async fn delete(tx: &Transaction<'_>, key: &str) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM blobs WHERE key = $1 RETURNING upload")
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&key]).await? else {
        return Ok(false);
    };
    let upload: String = row.try_get(0)?;
    delete_parts(tx, &upload).await?;
    Ok(true)
}

async fn list(
    client: &impl GenericClient,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<BlobMeta>, Fail> {
    // `[from, end)` is exactly the keys under `prefix` (or after `after`):
    // one range scan of the primary key.
    let from = match after {
        Some(after) if after >= prefix => after,
        _ => prefix,
    };
    let end = prefix_end(prefix);
    let stmt = client
        .prepare_cached(
            "SELECT key, upload, size, modified_at FROM blobs
             WHERE key >= $1 AND key <> $2 AND ($3::text IS NULL OR key < $3)
             ORDER BY key LIMIT $4",
        )
        .await?;
    let skip = after.unwrap_or("");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    client
        .query(&stmt, &[&from, &skip, &end, &limit])
        .await?
        .iter()
        .map(meta)
        .collect()
}

async fn expire(tx: &Transaction<'_>, before: Ts) -> Result<u64, Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM blob_uploads WHERE started_at < $1 RETURNING upload")
        .await?;
    let gone: Vec<String> = tx
        .query(&stmt, &[&before])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    if !gone.is_empty() {
        let stmt = tx
            .prepare_cached("DELETE FROM blob_parts WHERE upload = ANY($1)")
            .await?;
        tx.execute(&stmt, &[&gone]).await?;
    }
    Ok(gone.len() as u64)
}

impl PgStore {
    /// `Refused` when `bytes` are over one part.
    fn fits_a_part(&self, bytes: &[u8]) -> StoreResult<()> {
        if bytes.len() > MAX_PART {
            return Err(StoreError::Refused {
                path: self.shown.clone(),
                message: format!(
                    "a part of {} bytes is over the {MAX_PART}-byte limit of one part",
                    bytes.len()
                ),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for PgStore {
    async fn begin_blob_upload(&self, upload: &str, at: Ts) -> StoreResult<()> {
        in_tx!(self, |tx| begin(&tx, upload, at))
    }

    async fn put_blob_part(&self, upload: &str, seq: i64, bytes: &[u8]) -> StoreResult<()> {
        self.fits_a_part(bytes)?;
        in_tx!(self, |tx| put_part(&tx, upload, seq, bytes))
    }

    async fn commit_blob(
        &self,
        key: &str,
        upload: &str,
        expect: &BlobExpect,
        at: Ts,
    ) -> StoreResult<Option<BlobMeta>> {
        in_tx!(self, |tx| commit(&tx, key, upload, expect, at))
    }

    async fn abort_blob_upload(&self, upload: &str) -> StoreResult<()> {
        in_tx!(self, |tx| abort(&tx, upload))
    }

    /// A new key is one statement (its row and its part, or neither);
    /// else one transaction: the part, then the key (no upload row: nothing
    /// is left half-written for `expire` to find).
    async fn put_blob(
        &self,
        key: &str,
        upload: &str,
        bytes: &[u8],
        expect: &BlobExpect,
        at: Ts,
    ) -> StoreResult<Option<BlobMeta>> {
        self.fits_a_part(bytes)?;
        if matches!(expect, BlobExpect::Any | BlobExpect::Absent) {
            let created = read!(self, |client| put_new(&client, key, upload, bytes, at))?;
            if created.is_some() {
                return Ok(created);
            }
        }
        in_tx!(self, |tx| async {
            let len = bytes.len() as i64;
            if len > 0 {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO blob_parts (upload, seq, len, data) VALUES ($1, 0, $2, $3)",
                    )
                    .await?;
                tx.execute(&stmt, &[&upload, &len, &bytes]).await?;
            }
            point(&tx, key, upload, len, expect, at).await
        })
    }

    async fn head_blob(&self, key: &str) -> StoreResult<Option<BlobMeta>> {
        read!(self, |client| head(&client, key))
    }

    async fn blob_parts(&self, upload: &str) -> StoreResult<Vec<BlobPart>> {
        read!(self, |client| parts(&client, upload))
    }

    async fn read_blob_part(&self, upload: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
        read!(self, |client| read_part(&client, upload, seq))
    }

    async fn delete_blob(&self, key: &str) -> StoreResult<bool> {
        in_tx!(self, |tx| delete(&tx, key))
    }

    async fn list_blobs(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<BlobMeta>> {
        read!(self, |client| list(&client, prefix, after, limit))
    }

    async fn expire_blob_uploads(&self, before: Ts) -> StoreResult<u64> {
        in_tx!(self, |tx| expire(&tx, before))
    }
}
