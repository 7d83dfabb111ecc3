//! Objects kept in SQLite (see [`crate::BlobStore`]). Every write is one
//! `BEGIN IMMEDIATE` transaction, so writes never interleave.

use dispatch_core::Ts;
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::Fail;
use crate::blobs::{no_upload, too_large};
use crate::{BlobExpect, BlobMeta, BlobPart, MAX_BLOB, prefix_end};

fn size_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn meta(row: &Row<'_>) -> rusqlite::Result<BlobMeta> {
    let upload: String = row.get(1)?;
    Ok(BlobMeta {
        key: row.get(0)?,
        etag: upload.clone(),
        upload,
        size: size_of(row.get(2)?),
        modified_at: row.get(3)?,
    })
}

fn begin(tx: &Transaction<'_>, upload: &str, at: Ts) -> Result<(), Fail> {
    tx.prepare_cached(
        "INSERT INTO blob_uploads (upload, started_at) VALUES (?1, ?2)
         ON CONFLICT (upload) DO NOTHING",
    )?
    .execute(params![upload, at])?;
    Ok(())
}

fn put_part(tx: &Transaction<'_>, upload: &str, seq: i64, bytes: &[u8]) -> Result<(), Fail> {
    let Some(size) = tx
        .prepare_cached("SELECT size FROM blob_uploads WHERE upload = ?1")?
        .query_row([upload], |row| row.get::<_, i64>(0))
        .optional()?
    else {
        return Err(no_upload(upload).into());
    };
    let replaced: i64 = tx
        .prepare_cached("SELECT len FROM blob_parts WHERE upload = ?1 AND seq = ?2")?
        .query_row(params![upload, seq], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let grown = size_of(size).saturating_sub(size_of(replaced)) + bytes.len() as u64;
    if grown > MAX_BLOB {
        return Err(too_large(upload, grown).into());
    }
    tx.prepare_cached(
        "INSERT INTO blob_parts (upload, seq, len, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (upload, seq) DO UPDATE SET len = excluded.len, data = excluded.data",
    )?
    .execute(params![upload, seq, bytes.len() as i64, bytes])?;
    tx.prepare_cached("UPDATE blob_uploads SET size = ?2 WHERE upload = ?1")?
        .execute(params![upload, grown as i64])?;
    Ok(())
}

fn delete_parts(tx: &Transaction<'_>, upload: &str) -> Result<(), Fail> {
    tx.prepare_cached("DELETE FROM blob_parts WHERE upload = ?1")?
        .execute([upload])?;
    Ok(())
}

fn commit(
    tx: &Transaction<'_>,
    key: &str,
    upload: &str,
    expect: &BlobExpect,
    at: Ts,
) -> Result<Option<BlobMeta>, Fail> {
    let Some(size) = tx
        .prepare_cached("SELECT size FROM blob_uploads WHERE upload = ?1")?
        .query_row([upload], |row| row.get::<_, i64>(0))
        .optional()?
    else {
        return Err(no_upload(upload).into());
    };
    tx.prepare_cached("DELETE FROM blob_uploads WHERE upload = ?1")?
        .execute([upload])?;
    let now: Option<String> = tx
        .prepare_cached("SELECT upload FROM blobs WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    let holds = match (expect, &now) {
        (BlobExpect::Any, _) => true,
        (BlobExpect::Absent, now) => now.is_none(),
        (BlobExpect::Etag(etag), Some(now)) => etag == now,
        (BlobExpect::Etag(_), None) => false,
    };
    if !holds {
        delete_parts(tx, upload)?;
        return Ok(None);
    }
    tx.prepare_cached(
        "INSERT INTO blobs (key, upload, size, modified_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET upload = excluded.upload, size = excluded.size,
             modified_at = excluded.modified_at",
    )?
    .execute(params![key, upload, size, at])?;
    if let Some(old) = now.filter(|old| old != upload) {
        delete_parts(tx, &old)?;
    }
    Ok(Some(BlobMeta {
        key: key.to_string(),
        upload: upload.to_string(),
        size: size_of(size),
        etag: upload.to_string(),
        modified_at: at,
    }))
}

fn abort(tx: &Transaction<'_>, upload: &str) -> Result<(), Fail> {
    if tx
        .prepare_cached("DELETE FROM blob_uploads WHERE upload = ?1")?
        .execute([upload])?
        == 1
    {
        delete_parts(tx, upload)?;
    }
    Ok(())
}

fn head(tx: &Transaction<'_>, key: &str) -> Result<Option<BlobMeta>, Fail> {
    Ok(tx
        .prepare_cached("SELECT key, upload, size, modified_at FROM blobs WHERE key = ?1")?
        .query_row([key], meta)
        .optional()?)
}

fn parts(tx: &Transaction<'_>, upload: &str) -> Result<Vec<BlobPart>, Fail> {
    Ok(tx
        .prepare_cached("SELECT seq, len FROM blob_parts WHERE upload = ?1 ORDER BY seq")?
        .query_map([upload], |row| {
            Ok(BlobPart {
                seq: row.get(0)?,
                len: size_of(row.get(1)?),
            })
        })?
        .collect::<Result<_, _>>()?)
}

fn read_part(tx: &Transaction<'_>, upload: &str, seq: i64) -> Result<Option<Vec<u8>>, Fail> {
    Ok(tx
        .prepare_cached("SELECT data FROM blob_parts WHERE upload = ?1 AND seq = ?2")?
        .query_row(params![upload, seq], |row| row.get(0))
        .optional()?)
}

fn delete(tx: &Transaction<'_>, key: &str) -> Result<bool, Fail> {
    let upload: Option<String> = tx
        .prepare_cached("DELETE FROM blobs WHERE key = ?1 RETURNING upload")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    match upload {
        Some(upload) => {
            delete_parts(tx, &upload)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn list(
    tx: &Transaction<'_>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<BlobMeta>, Fail> {
    // SQLite compares TEXT byte by byte (BINARY): `[from, end)` is exactly
    // the keys under `prefix`, one range scan of the primary key.
    let from = match after {
        Some(after) if after >= prefix => after,
        _ => prefix,
    };
    let end = prefix_end(prefix);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .prepare_cached(
            "SELECT key, upload, size, modified_at FROM blobs
             WHERE key >= ?1 AND key <> ?2 AND (?3 IS NULL OR key < ?3)
             ORDER BY key LIMIT ?4",
        )?
        .query_map(params![from, after.unwrap_or(""), end, limit], meta)?
        .collect::<Result<_, _>>()?)
}

fn expire(tx: &Transaction<'_>, before: Ts) -> Result<u64, Fail> {
    let gone: Vec<String> = tx
        .prepare_cached("DELETE FROM blob_uploads WHERE started_at < ?1 RETURNING upload")?
        .query_map([before], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for upload in &gone {
        delete_parts(tx, upload)?;
    }
    Ok(gone.len() as u64)
}

#[async_trait::async_trait]
impl crate::BlobStore for super::SqliteStore {
    async fn begin_blob_upload(&self, upload: &str, at: Ts) -> crate::StoreResult<()> {
        self.write(|tx| begin(tx, upload, at))
    }

    async fn put_blob_part(&self, upload: &str, seq: i64, bytes: &[u8]) -> crate::StoreResult<()> {
        if bytes.len() > crate::MAX_PART {
            return Err(crate::StoreError::Refused {
                path: self.shown.clone(),
                message: format!(
                    "a part of {} bytes is over the {}-byte limit of one part",
                    bytes.len(),
                    crate::MAX_PART
                ),
            });
        }
        self.write(|tx| put_part(tx, upload, seq, bytes))
    }

    async fn commit_blob(
        &self,
        key: &str,
        upload: &str,
        expect: &BlobExpect,
        at: Ts,
    ) -> crate::StoreResult<Option<BlobMeta>> {
        self.write(|tx| commit(tx, key, upload, expect, at))
    }

    async fn abort_blob_upload(&self, upload: &str) -> crate::StoreResult<()> {
        self.write(|tx| abort(tx, upload))
    }

    async fn head_blob(&self, key: &str) -> crate::StoreResult<Option<BlobMeta>> {
        self.read(|tx| head(tx, key))
    }

    async fn blob_parts(&self, upload: &str) -> crate::StoreResult<Vec<BlobPart>> {
        self.read(|tx| parts(tx, upload))
    }

    async fn read_blob_part(&self, upload: &str, seq: i64) -> crate::StoreResult<Option<Vec<u8>>> {
        self.read(|tx| read_part(tx, upload, seq))
    }

    async fn delete_blob(&self, key: &str) -> crate::StoreResult<bool> {
        self.write(|tx| delete(tx, key))
    }

    async fn list_blobs(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> crate::StoreResult<Vec<BlobMeta>> {
        self.read(|tx| list(tx, prefix, after, limit))
    }

    async fn expire_blob_uploads(&self, before: Ts) -> crate::StoreResult<u64> {
        self.write(|tx| expire(tx, before))
    }
}
