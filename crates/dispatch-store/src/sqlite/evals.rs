//! Eval reports on SQLite (see [`crate::EvalStore`]).

use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::Fail;
use crate::EvalRecord;

const COLUMNS: &str = "id, parcel_digest, parcel_name, created_at, report";

fn record(row: &Row<'_>) -> rusqlite::Result<EvalRecord> {
    let report: String = row.get(4)?;
    Ok(EvalRecord {
        id: row.get(0)?,
        parcel_digest: row.get(1)?,
        parcel_name: row.get(2)?,
        created_at: row.get(3)?,
        report: serde_json::from_str(&report).unwrap_or(serde_json::Value::Null),
    })
}

pub(super) fn put(tx: &Transaction<'_>, e: &EvalRecord) -> Result<bool, Fail> {
    let n = tx
        .prepare_cached(
            "INSERT INTO evals (id, parcel_digest, parcel_name, created_at, report) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            e.id,
            e.parcel_digest,
            e.parcel_name,
            e.created_at,
            e.report.to_string()
        ])?;
    Ok(n == 1)
}

pub(super) fn with_prefix(
    tx: &Transaction<'_>,
    prefix: &str,
    limit: u32,
) -> Result<Vec<EvalRecord>, Fail> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM evals WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2"
        ))?
        .query_map(params![prefix, limit], record)?
        .collect::<Result<_, _>>()?)
}

pub(super) fn latest_of(tx: &Transaction<'_>, digest: &str) -> Result<Option<EvalRecord>, Fail> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM evals WHERE substr(parcel_digest, 1, length(?1)) = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))?
        .query_row([digest], record)
        .optional()?)
}
