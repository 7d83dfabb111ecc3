//! Parcels, briefs and shipped run logs on SQLite (see
//! [`crate::ParcelStore`] and [`crate::RunLogStore`]).

use dispatch_core::RunId;
use rusqlite::{OptionalExtension, Transaction, params};

use super::Fail;
use super::runs::exists;
use crate::{LogArchive, StoreError, StoredParcel};

/// Chunks read per query when reading a log.
const CHUNKS_PER_READ: i64 = 64;

pub(super) fn put_parcel(tx: &Transaction<'_>, p: &StoredParcel) -> Result<bool, Fail> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO parcels (digest, name, manifest, archive, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (digest) DO UPDATE SET name = excluded.name,
                 manifest = excluded.manifest, archive = excluded.archive
             WHERE parcels.manifest IS NOT excluded.manifest
                 OR parcels.archive IS NOT excluded.archive",
        )?
        .execute(params![
            p.digest,
            p.name,
            p.manifest,
            p.archive,
            p.created_at
        ])?;
    Ok(inserted == 1)
}

pub(super) fn has_parcel(tx: &Transaction<'_>, digest: &str) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM parcels WHERE digest = ?1")?
        .query_row([digest], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(super) fn get_parcel(tx: &Transaction<'_>, digest: &str) -> Result<Option<StoredParcel>, Fail> {
    Ok(tx
        .prepare_cached(
            "SELECT name, manifest, archive, created_at FROM parcels WHERE digest = ?1",
        )?
        .query_row([digest], |row| {
            Ok(StoredParcel {
                digest: digest.to_string(),
                name: row.get(0)?,
                manifest: row.get(1)?,
                archive: row.get(2)?,
                created_at: row.get(3)?,
            })
        })
        .optional()?)
}

pub(super) fn find_parcels(tx: &Transaction<'_>, reference: &str) -> Result<Vec<String>, Fail> {
    let named: Option<String> = tx
        .prepare_cached(
            "SELECT digest FROM parcels WHERE name = ?1 ORDER BY created_at DESC, digest LIMIT 1",
        )?
        .query_row([reference], |row| row.get(0))
        .optional()?;
    if let Some(digest) = named {
        return Ok(vec![digest]);
    }
    if reference.len() < 4 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let low = reference.to_ascii_lowercase();
    Ok(tx
        .prepare_cached("SELECT digest FROM parcels WHERE substr(digest, 1, ?1) = ?2 LIMIT 2")?
        .query_map(params![low.len() as i64, low], |row| row.get(0))?
        .collect::<Result<_, _>>()?)
}

pub(super) fn put_brief(tx: &Transaction<'_>, sha256: &str, bytes: &[u8]) -> Result<bool, Fail> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO briefs (sha256, content) VALUES (?1, ?2)
             ON CONFLICT (sha256) DO UPDATE SET content = excluded.content
             WHERE briefs.content IS NOT excluded.content",
        )?
        .execute(params![sha256, bytes])?;
    Ok(inserted == 1)
}

pub(super) fn get_brief(tx: &Transaction<'_>, sha256: &str) -> Result<Option<Vec<u8>>, Fail> {
    Ok(tx
        .prepare_cached("SELECT content FROM briefs WHERE sha256 = ?1")?
        .query_row([sha256], |row| row.get(0))
        .optional()?)
}

pub(super) fn delete_unreferenced_briefs(
    tx: &Transaction<'_>,
    sha256s: &[String],
) -> Result<u64, Fail> {
    let mut bytes = 0u64;
    for sha in sha256s {
        let removed: Option<i64> = tx
            .prepare_cached(
                "DELETE FROM briefs WHERE sha256 = ?1
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.brief_sha256 = briefs.sha256)
                 RETURNING length(content)",
            )?
            .query_row([sha], |row| row.get(0))
            .optional()?;
        bytes += removed.unwrap_or(0).max(0) as u64;
    }
    Ok(bytes)
}

fn position(run: &RunId, offset: u64) -> Result<i64, Fail> {
    i64::try_from(offset)
        .map_err(|_| Fail::Encode(format!("log offset {offset} of run {run} is out of range")))
}

fn stored_length(tx: &Transaction<'_>, run: &RunId) -> Result<u64, Fail> {
    let end: Option<i64> = tx
        .prepare_cached(
            "SELECT COALESCE(
                 (SELECT pos + length(data) FROM run_logs WHERE run_id = ?1
                  ORDER BY pos DESC LIMIT 1),
                 (SELECT size FROM run_log_archives WHERE run_id = ?1), 0)",
        )?
        .query_row([run.as_str()], |row| row.get(0))
        .optional()?;
    Ok(end.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

pub(super) fn append_log(
    tx: &Transaction<'_>,
    run: &RunId,
    fence: i64,
    offset: u64,
    bytes: &[u8],
) -> Result<(), Fail> {
    // Under the write lock: no claim moves the token on until this commits.
    super::fenced::check_token(tx, run, fence)?;
    let length = stored_length(tx, run)?;
    if offset == length {
        if !bytes.is_empty() {
            tx.prepare_cached("INSERT INTO run_logs (run_id, pos, data) VALUES (?1, ?2, ?3)")?
                .execute(params![run.as_str(), position(run, offset)?, bytes])?;
        }
        return Ok(());
    }
    if offset < length && !bytes.is_empty() {
        // A retry whose first try committed finds its own chunk there.
        let there: Option<Vec<u8>> = tx
            .prepare_cached("SELECT data FROM run_logs WHERE run_id = ?1 AND pos = ?2")?
            .query_row(params![run.as_str(), position(run, offset)?], |row| {
                row.get(0)
            })
            .optional()?;
        if there.as_deref() == Some(bytes) {
            return Ok(());
        }
    }
    Err(Fail::Store(StoreError::LogMoved {
        id: run.clone(),
        offset,
        length,
    }))
}

pub(super) fn log_length(tx: &Transaction<'_>, run: &RunId) -> Result<u64, Fail> {
    stored_length(tx, run)
}

pub(super) fn read_log(
    tx: &Transaction<'_>,
    run: &RunId,
    offset: u64,
    max: usize,
) -> Result<Vec<u8>, Fail> {
    let chunks: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT pos, data FROM run_logs WHERE run_id = ?1 AND pos >= COALESCE(
                 (SELECT MAX(pos) FROM run_logs WHERE run_id = ?1 AND pos <= ?2), 0)
             ORDER BY pos LIMIT ?3",
        )?
        .query_map(
            params![run.as_str(), position(run, offset)?, CHUNKS_PER_READ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    Ok(crate::parcels::gather(chunks, offset, max))
}

pub(super) fn archive_log(
    tx: &Transaction<'_>,
    run: &RunId,
    archive: &LogArchive,
) -> Result<bool, Fail> {
    if !exists(tx, run)? {
        return Err(Fail::Store(StoreError::NotFound(run.to_string())));
    }
    if log_archive(tx, run)?.is_some() || stored_length(tx, run)? != archive.size {
        return Ok(false);
    }
    let size = position(run, archive.size)?;
    tx.prepare_cached("INSERT INTO run_log_archives (run_id, sha256, size) VALUES (?1, ?2, ?3)")?
        .execute(params![run.as_str(), archive.sha256, size])?;
    tx.prepare_cached("DELETE FROM run_logs WHERE run_id = ?1 AND pos < ?2")?
        .execute(params![run.as_str(), size])?;
    Ok(true)
}

pub(super) fn log_archive(tx: &Transaction<'_>, run: &RunId) -> Result<Option<LogArchive>, Fail> {
    Ok(tx
        .prepare_cached("SELECT sha256, size FROM run_log_archives WHERE run_id = ?1")?
        .query_row([run.as_str()], |row| {
            Ok(LogArchive {
                sha256: row.get(0)?,
                size: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            })
        })
        .optional()?)
}

pub(super) fn log_archive_in_use(tx: &Transaction<'_>, sha256: &str) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM run_log_archives WHERE sha256 = ?1 LIMIT 1")?
        .query_row([sha256], |_| Ok(()))
        .optional()?
        .is_some())
}
