//! Parcels, briefs and shipped run logs on PostgreSQL (see
//! [`crate::ParcelStore`] and [`crate::RunLogStore`]).
//!
//! An append takes the run's row lock first, like every other write to one
//! run, so appends to one log are serialized and each sees the length the
//! previous one left.

use deadpool_postgres::Transaction;
use dispatch_core::RunId;

use async_trait::async_trait;

use super::runs::not_found;
use super::{Fail, PgStore};
use crate::{LogArchive, StoreError, StoredParcel};
use crate::{RunLogStore, StoreResult};

/// Chunks read per query when reading a log.
const CHUNKS_PER_READ: i64 = 64;

pub(super) async fn put_parcel(tx: &Transaction<'_>, p: &StoredParcel) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO parcels (digest, name, manifest, archive, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (digest) DO UPDATE SET name = EXCLUDED.name,
                 manifest = EXCLUDED.manifest, archive = EXCLUDED.archive
             WHERE parcels.manifest IS DISTINCT FROM EXCLUDED.manifest
                 OR parcels.archive IS DISTINCT FROM EXCLUDED.archive",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[&p.digest, &p.name, &p.manifest, &p.archive, &p.created_at],
        )
        .await?;
    Ok(inserted == 1)
}

pub(super) async fn has_parcel(tx: &Transaction<'_>, digest: &str) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM parcels WHERE digest = $1")
        .await?;
    Ok(tx.query_opt(&stmt, &[&digest]).await?.is_some())
}

pub(super) async fn find_parcels(
    tx: &Transaction<'_>,
    reference: &str,
) -> Result<Vec<String>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT digest FROM parcels WHERE name = $1 ORDER BY created_at DESC, digest LIMIT 1",
        )
        .await?;
    if let Some(row) = tx.query_opt(&stmt, &[&reference]).await? {
        return Ok(vec![row.try_get(0)?]);
    }
    if reference.len() < 4 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let low = reference.to_ascii_lowercase();
    let stmt = tx
        .prepare_cached("SELECT digest FROM parcels WHERE starts_with(digest, $1) LIMIT 2")
        .await?;
    let rows = tx.query(&stmt, &[&low]).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

pub(super) async fn get_parcel(
    tx: &Transaction<'_>,
    digest: &str,
) -> Result<Option<StoredParcel>, Fail> {
    let stmt = tx
        .prepare_cached("SELECT name, manifest, archive, created_at FROM parcels WHERE digest = $1")
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&digest]).await? else {
        return Ok(None);
    };
    Ok(Some(StoredParcel {
        digest: digest.to_string(),
        name: row.try_get(0)?,
        manifest: row.try_get(1)?,
        archive: row.try_get(2)?,
        created_at: row.try_get(3)?,
    }))
}

pub(super) async fn put_brief(
    tx: &Transaction<'_>,
    sha256: &str,
    bytes: &[u8],
) -> Result<bool, Fail> {
    // Not one `ON CONFLICT DO UPDATE`: that locks the existing row even
    // when nothing changes, so every run created with the same brief
    // waited for the one before to commit (16 ms a create at 32 at once,
    // issue #38). A brief is stored by its digest: the row is only
    // rewritten when its content is not what the digest says. One
    // statement: its update sees the rows from before its insert.
    let stmt = tx
        .prepare_cached(
            "WITH ins AS (INSERT INTO briefs (sha256, content) VALUES ($1, $2) \
                          ON CONFLICT (sha256) DO NOTHING RETURNING 1), \
                  fix AS (UPDATE briefs SET content = $2 \
                          WHERE sha256 = $1 AND content IS DISTINCT FROM $2 RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM fix)",
        )
        .await?;
    Ok(tx.query_one(&stmt, &[&sha256, &bytes]).await?.try_get(0)?)
}

pub(super) async fn get_brief(tx: &Transaction<'_>, sha256: &str) -> Result<Option<Vec<u8>>, Fail> {
    let stmt = tx
        .prepare_cached("SELECT content FROM briefs WHERE sha256 = $1")
        .await?;
    match tx.query_opt(&stmt, &[&sha256]).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

pub(super) async fn delete_unreferenced_briefs(
    tx: &Transaction<'_>,
    sha256s: &[String],
) -> Result<u64, Fail> {
    let stmt = tx
        .prepare_cached(
            "DELETE FROM briefs WHERE sha256 = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.brief_sha256 = briefs.sha256)
             RETURNING octet_length(content)::BIGINT",
        )
        .await?;
    let rows = tx.query(&stmt, &[&sha256s]).await?;
    let mut bytes = 0u64;
    for row in rows {
        let n: Option<i64> = row.try_get(0)?;
        bytes += n.unwrap_or(0).max(0) as u64;
    }
    Ok(bytes)
}

fn position(run: &RunId, offset: u64) -> Result<i64, Fail> {
    i64::try_from(offset)
        .map_err(|_| Fail::Encode(format!("log offset {offset} of run {run} is out of range")))
}

async fn stored_length(tx: &Transaction<'_>, run: &RunId) -> Result<u64, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT COALESCE(
                 (SELECT pos + octet_length(data)::bigint FROM run_logs WHERE run_id = $1
                  ORDER BY pos DESC LIMIT 1),
                 (SELECT size FROM run_log_archives WHERE run_id = $1), 0)",
        )
        .await?;
    let end: Option<i64> = match tx.query_opt(&stmt, &[&run.as_str()]).await? {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    };
    Ok(end.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

pub(super) async fn append_log(
    tx: &Transaction<'_>,
    run: &RunId,
    fence: i64,
    offset: u64,
    bytes: &[u8],
) -> Result<(), Fail> {
    // The row lock orders the appends; the token is read under it.
    super::fenced::check_token(tx, run, fence).await?;
    let length = stored_length(tx, run).await?;
    let pos = position(run, offset)?;
    if offset == length {
        if !bytes.is_empty() {
            let stmt = tx
                .prepare_cached("INSERT INTO run_logs (run_id, pos, data) VALUES ($1, $2, $3)")
                .await?;
            tx.execute(&stmt, &[&run.as_str(), &pos, &bytes]).await?;
        }
        return Ok(());
    }
    if offset < length && !bytes.is_empty() {
        // A retry whose first try committed finds its own chunk there.
        let stmt = tx
            .prepare_cached("SELECT data FROM run_logs WHERE run_id = $1 AND pos = $2")
            .await?;
        if let Some(row) = tx.query_opt(&stmt, &[&run.as_str(), &pos]).await? {
            let there: Vec<u8> = row.try_get(0)?;
            if there == bytes {
                return Ok(());
            }
        }
    }
    Err(Fail::Store(StoreError::LogMoved {
        id: run.clone(),
        offset,
        length,
    }))
}

pub(super) async fn log_length(tx: &Transaction<'_>, run: &RunId) -> Result<u64, Fail> {
    stored_length(tx, run).await
}

pub(super) async fn read_log(
    tx: &Transaction<'_>,
    run: &RunId,
    offset: u64,
    max: usize,
) -> Result<Vec<u8>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT pos, data FROM run_logs WHERE run_id = $1 AND pos >= COALESCE(
                 (SELECT MAX(pos) FROM run_logs WHERE run_id = $1 AND pos <= $2), 0)
             ORDER BY pos LIMIT $3",
        )
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[&run.as_str(), &position(run, offset)?, &CHUNKS_PER_READ],
        )
        .await?;
    let chunks = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<(i64, Vec<u8>)>, Fail>>()?;
    Ok(crate::parcels::gather(chunks, offset, max))
}

pub(super) async fn archive_log(
    tx: &Transaction<'_>,
    run: &RunId,
    archive: &LogArchive,
) -> Result<bool, Fail> {
    let lock = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    if tx.query_opt(&lock, &[&run.as_str()]).await?.is_none() {
        return Err(not_found(run));
    }
    if log_archive(tx, run).await?.is_some() || stored_length(tx, run).await? != archive.size {
        return Ok(false);
    }
    let size = position(run, archive.size)?;
    let stmt = tx
        .prepare_cached("INSERT INTO run_log_archives (run_id, sha256, size) VALUES ($1, $2, $3)")
        .await?;
    tx.execute(&stmt, &[&run.as_str(), &archive.sha256, &size])
        .await?;
    let stmt = tx
        .prepare_cached("DELETE FROM run_logs WHERE run_id = $1 AND pos < $2")
        .await?;
    tx.execute(&stmt, &[&run.as_str(), &size]).await?;
    Ok(true)
}

pub(super) async fn log_archive(
    tx: &Transaction<'_>,
    run: &RunId,
) -> Result<Option<LogArchive>, Fail> {
    let stmt = tx
        .prepare_cached("SELECT sha256, size FROM run_log_archives WHERE run_id = $1")
        .await?;
    Ok(match tx.query_opt(&stmt, &[&run.as_str()]).await? {
        Some(row) => Some(LogArchive {
            sha256: row.try_get(0)?,
            size: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
        }),
        None => None,
    })
}

pub(super) async fn log_archive_in_use(tx: &Transaction<'_>, sha256: &str) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM run_log_archives WHERE sha256 = $1 LIMIT 1")
        .await?;
    Ok(tx.query_opt(&stmt, &[&sha256]).await?.is_some())
}

/// The `RunLogStore` of PostgreSQL: the queries above, each in a transaction
/// (an append in one statement first, see `super::one_statement`).
#[async_trait]
impl RunLogStore for PgStore {
    async fn append_log(
        &self,
        run: &RunId,
        fence: i64,
        offset: u64,
        bytes: &[u8],
    ) -> StoreResult<()> {
        if read!(self, |client| async {
            let pos = position(run, offset)?;
            super::one_statement::append_log(&client, run, fence, pos, bytes).await
        })? {
            return Ok(());
        }
        in_tx!(self, |tx| append_log(&tx, run, fence, offset, bytes))
    }

    async fn append_logs_many(
        &self,
        batch: &[crate::HeldLog],
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.append_logs_many_here(batch).await
    }

    async fn log_length(&self, run: &RunId) -> StoreResult<u64> {
        in_tx!(self, |tx| log_length(&tx, run))
    }

    async fn read_log(&self, run: &RunId, offset: u64, max: usize) -> StoreResult<Vec<u8>> {
        in_tx!(self, |tx| read_log(&tx, run, offset, max))
    }

    async fn archive_log(&self, run: &RunId, archive: &LogArchive) -> StoreResult<bool> {
        in_tx!(self, |tx| archive_log(&tx, run, archive))
    }

    async fn log_archive(&self, run: &RunId) -> StoreResult<Option<LogArchive>> {
        in_tx!(self, |tx| log_archive(&tx, run))
    }

    async fn log_archive_in_use(&self, sha256: &str) -> StoreResult<bool> {
        in_tx!(self, |tx| log_archive_in_use(&tx, sha256))
    }
}
