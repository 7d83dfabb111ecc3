//! The `sessions` table (see [`crate::SessionStore`]).

use dispatch_core::{RunId, Ts};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::Fail;
use crate::{SessionRecord, StoreError};

const COLUMNS: &str = "key, data, version, updated_at, updated_by";

fn record(row: &Row<'_>) -> rusqlite::Result<(String, String, i64, i64, Option<String>)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn to_record(raw: (String, String, i64, i64, Option<String>)) -> Result<SessionRecord, Fail> {
    let (key, data, version, updated_at, updated_by) = raw;
    let data =
        serde_json::from_str(&data).map_err(|e| Fail::Corrupt(format!("session {key}: {e}")))?;
    Ok(SessionRecord {
        updated_by: updated_by.and_then(|id| id.parse::<RunId>().ok()),
        key,
        data,
        version,
        updated_at,
    })
}

pub(super) fn get(tx: &Transaction<'_>, key: &str) -> Result<Option<SessionRecord>, Fail> {
    let raw = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE key = ?1"))?
        .query_row([key], record)
        .optional()?;
    raw.map(to_record).transpose()
}

pub(super) fn put(
    tx: &Transaction<'_>,
    key: &str,
    data: &serde_json::Value,
    expected: i64,
    by: Option<&RunId>,
    at: Ts,
) -> Result<i64, Fail> {
    let text = super::to_json("session", data)?;
    let by = by.map(RunId::as_str);
    let changed = if expected == 0 {
        tx.prepare_cached(
            "INSERT INTO sessions (key, data, version, updated_at, updated_by) VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (key) DO NOTHING",
        )?
        .execute(params![key, text, at, by])?
    } else {
        tx.prepare_cached(
            "UPDATE sessions SET data = ?2, version = version + 1, updated_at = ?3, updated_by = ?4
             WHERE key = ?1 AND version = ?5",
        )?
        .execute(params![key, text, at, by, expected])?
    };
    if changed == 0 {
        return Err(Fail::Store(StoreError::SessionConflict {
            key: key.to_string(),
            expected,
        }));
    }
    Ok(expected + 1)
}

pub(super) fn list(tx: &Transaction<'_>, prefix: Option<&str>) -> Result<Vec<SessionRecord>, Fail> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE substr(key, 1, length(?1)) = ?1 ORDER BY updated_at DESC, key"
    ))?;
    let rows = stmt.query_map([prefix.unwrap_or("")], record)?;
    rows.map(|r| to_record(r?)).collect()
}

pub(super) fn delete(tx: &Transaction<'_>, key: &str) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("DELETE FROM sessions WHERE key = ?1")?
        .execute([key])?
        > 0)
}
