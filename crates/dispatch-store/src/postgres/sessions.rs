//! Conversation sessions on PostgreSQL (see [`crate::SessionStore`]).

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use dispatch_core::{RunId, Ts};
use tokio_postgres::Row;

use super::{Fail, PgStore};
use crate::sessions::{FILE_PREFIX, SCOPED_PREFIXES};
use crate::{SessionRecord, StoreError, StoreResult};

/// Statuses of a run that holds its session.
const LIVE: &str = "('review', 'queued', 'starting', 'running', 'paused')";

const COLUMNS: &str = "key, data, version, updated_at, updated_by";

#[async_trait]
impl crate::SessionStore for PgStore {
    async fn get_session(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        crate::sessions::check_key(key)?;
        in_tx!(self, |tx| get(&tx, key))
    }

    async fn put_session(
        &self,
        key: &str,
        data: &serde_json::Value,
        expected: i64,
        by: Option<&RunId>,
        at: Ts,
    ) -> StoreResult<i64> {
        crate::sessions::check_key(key)?;
        in_tx!(self, |tx| put(&tx, key, data, expected, by, at))
    }

    async fn list_sessions(&self, prefix: Option<&str>) -> StoreResult<Vec<SessionRecord>> {
        if prefix.is_some_and(|p| p.contains('\0')) {
            return Ok(Vec::new());
        }
        in_tx!(self, |tx| list(&tx, prefix))
    }

    async fn delete_session(&self, key: &str) -> StoreResult<bool> {
        crate::sessions::check_key(key)?;
        in_tx!(self, |tx| delete(&tx, key))
    }

    async fn session_holder(&self, name: &str) -> StoreResult<Option<RunId>> {
        if name.contains('\0') {
            return Ok(None);
        }
        in_tx!(self, |tx| holder(&tx, name))
    }

    async fn remove_session(&self, name: &str) -> StoreResult<u64> {
        crate::sessions::check_key(name)?;
        in_tx!(self, |tx| remove(&tx, name))
    }

    async fn expire_sessions(&self, prefix: &str, before: Ts) -> StoreResult<Vec<String>> {
        if prefix.contains('\0') {
            return Ok(Vec::new());
        }
        in_tx!(self, |tx| expire(&tx, prefix, before))
    }
}

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

async fn get(tx: &Transaction<'_>, key: &str) -> Result<Option<SessionRecord>, Fail> {
    let stmt = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE key = $1"))
        .await?;
    tx.query_opt(&stmt, &[&key])
        .await?
        .map(|r| record(&r))
        .transpose()
}

async fn put(
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

async fn list(tx: &Transaction<'_>, prefix: Option<&str>) -> Result<Vec<SessionRecord>, Fail> {
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

async fn delete(tx: &Transaction<'_>, key: &str) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM sessions WHERE key = $1")
        .await?;
    Ok(tx.execute(&stmt, &[&key]).await? > 0)
}

async fn holder(tx: &Transaction<'_>, name: &str) -> Result<Option<RunId>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE session = $1 AND status IN {LIVE} ORDER BY id LIMIT 1"
        ))
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&name]).await? else {
        return Ok(None);
    };
    let t: String = row.try_get(0)?;
    t.parse()
        .map(Some)
        .map_err(|_| Fail::Corrupt(format!("`{t}` is not a run id")))
}

async fn remove(tx: &Transaction<'_>, name: &str) -> Result<u64, Fail> {
    // A run being created in the session waits for this transaction: its
    // creation checks the holder under the same lock.
    super::reliability::lock(tx, "session", name).await?;
    if let Some(run) = holder(tx, name).await? {
        return Err(Fail::Store(StoreError::SessionBusy {
            session: name.to_string(),
            run,
        }));
    }
    let stmt = tx
        .prepare_cached("DELETE FROM sessions WHERE key = $1 OR key = $2")
        .await?;
    let file = format!("{FILE_PREFIX}{name}");
    let mut removed = tx.execute(&stmt, &[&name, &file]).await?;
    let stmt = tx
        .prepare_cached("DELETE FROM sessions WHERE starts_with(key, $1)")
        .await?;
    for p in SCOPED_PREFIXES {
        removed += tx.execute(&stmt, &[&format!("{p}{name}/")]).await?;
    }
    Ok(removed)
}

async fn expire(tx: &Transaction<'_>, prefix: &str, before: Ts) -> Result<Vec<String>, Fail> {
    // Each session under `prefix` (its conversation, its file, or both)
    // with its last save.
    let stmt = tx
        .prepare_cached(
            "SELECT CASE WHEN starts_with(key, $2) THEN substr(key, length($2) + 1) ELSE key END AS name,
                    MAX(updated_at)
             FROM sessions
             WHERE (NOT starts_with(key, '@') AND starts_with(key, $1))
                OR starts_with(key, $2 || $1)
             GROUP BY 1 ORDER BY 1",
        )
        .await?;
    let rows = tx.query(&stmt, &[&prefix, &FILE_PREFIX]).await?;
    let used = tx
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE session = $1 AND (status IN {LIVE} OR created_at >= $2))"
        ))
        .await?;
    let mut gone = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let last: i64 = row.try_get(1)?;
        let bound: bool = tx.query_one(&used, &[&name, &before]).await?.try_get(0)?;
        if last < before && !bound {
            remove(tx, &name).await?;
            gone.push(name);
        }
    }
    Ok(gone)
}
