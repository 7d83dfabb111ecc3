//! Conversation sessions on PostgreSQL (see [`crate::SessionStore`]).

use deadpool_postgres::Transaction;
use dispatch_core::{RunId, Ts};
use tokio_postgres::Row;

use super::Fail;
use crate::{SessionRecord, StoreError};

const COLUMNS: &str = "key, data, version, updated_at, updated_by";

fn record(row: &Row) -> Result<SessionRecord, Fail> {
    let by: Option<String> = row.try_get(4)?;
    let key: String = row.try_get(0)?;
    let data: String = row.try_get(1)?;
    let data =
        serde_json::from_str(&data).map_err(|e| Fail::Corrupt(format!("session {key}: {e}")))?;
    Ok(SessionRecord {
        key,
        data,
        version: row.try_get(2)?,
        updated_at: row.try_get(3)?,
        updated_by: by.and_then(|id| id.parse::<RunId>().ok()),
    })
}

pub(super) async fn get(tx: &Transaction<'_>, key: &str) -> Result<Option<SessionRecord>, Fail> {
    let stmt = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE key = $1"))
        .await?;
    tx.query_opt(&stmt, &[&key])
        .await?
        .map(|r| record(&r))
        .transpose()
}

pub(super) async fn put(
    tx: &Transaction<'_>,
    key: &str,
    data: &serde_json::Value,
    expected: i64,
    by: Option<&RunId>,
    at: Ts,
) -> Result<i64, Fail> {
    let by = by.map(|r| r.as_str().to_string());
    let data = data.to_string();
    let changed = if expected == 0 {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO sessions (key, data, version, updated_at, updated_by) VALUES ($1, $2, 1, $3, $4)
                 ON CONFLICT (key) DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&key, &data, &at, &by]).await?
    } else {
        let stmt = tx
            .prepare_cached(
                "UPDATE sessions SET data = $2, version = version + 1, updated_at = $3, updated_by = $4
                 WHERE key = $1 AND version = $5",
            )
            .await?;
        tx.execute(&stmt, &[&key, &data, &at, &by, &expected])
            .await?
    };
    if changed == 0 {
        return Err(Fail::Store(StoreError::SessionConflict {
            key: key.to_string(),
            expected,
        }));
    }
    Ok(expected + 1)
}

pub(super) async fn list(
    tx: &Transaction<'_>,
    prefix: Option<&str>,
) -> Result<Vec<SessionRecord>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE starts_with(key, $1) ORDER BY updated_at DESC, key"
        ))
        .await?;
    tx.query(&stmt, &[&prefix.unwrap_or("")])
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(super) async fn delete(tx: &Transaction<'_>, key: &str) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM sessions WHERE key = $1")
        .await?;
    Ok(tx.execute(&stmt, &[&key]).await? > 0)
}
