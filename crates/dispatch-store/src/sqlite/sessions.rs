//! The `sessions` table (see [`crate::SessionStore`]).

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::{Fail, SqliteStore};
use crate::sessions::{FILE_PREFIX, SCOPED_PREFIXES};
use crate::{SessionRecord, StoreError, StoreResult};

/// Statuses of a run that holds its session.
const LIVE: &str = "('review', 'queued', 'starting', 'running', 'paused')";

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

#[async_trait]
impl crate::SessionStore for SqliteStore {
    async fn get_session(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        crate::sessions::check_key(key)?;
        self.read(|tx| get(tx, key))
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
        self.write(|tx| put(tx, key, data, expected, by, at))
    }

    async fn list_sessions(&self, prefix: Option<&str>) -> StoreResult<Vec<SessionRecord>> {
        self.read(|tx| list(tx, prefix))
    }

    async fn delete_session(&self, key: &str) -> StoreResult<bool> {
        crate::sessions::check_key(key)?;
        self.write(|tx| delete(tx, key))
    }

    async fn session_holder(&self, name: &str) -> StoreResult<Option<RunId>> {
        self.read(|tx| holder(tx, name))
    }

    async fn remove_session(&self, name: &str) -> StoreResult<u64> {
        crate::sessions::check_key(name)?;
        self.write(|tx| remove(tx, name))
    }

    async fn expire_sessions(&self, prefix: &str, before: Ts) -> StoreResult<Vec<String>> {
        self.write(|tx| expire(tx, prefix, before))
    }
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

fn get(tx: &Transaction<'_>, key: &str) -> Result<Option<SessionRecord>, Fail> {
    let raw = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE key = ?1"))?
        .query_row([key], record)
        .optional()?;
    raw.map(to_record).transpose()
}

fn put(
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

fn list(tx: &Transaction<'_>, prefix: Option<&str>) -> Result<Vec<SessionRecord>, Fail> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE substr(key, 1, length(?1)) = ?1 ORDER BY updated_at DESC, key"
    ))?;
    let rows = stmt.query_map([prefix.unwrap_or("")], record)?;
    rows.map(|r| to_record(r?)).collect()
}

fn delete(tx: &Transaction<'_>, key: &str) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("DELETE FROM sessions WHERE key = ?1")?
        .execute([key])?
        > 0)
}

fn holder(tx: &Transaction<'_>, name: &str) -> Result<Option<RunId>, Fail> {
    let id: Option<String> = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE session = ?1 AND status IN {LIVE} ORDER BY id LIMIT 1"
        ))?
        .query_row([name], |row| row.get(0))
        .optional()?;
    id.map(|t| {
        t.parse()
            .map_err(|_| Fail::Corrupt(format!("`{t}` is not a run id")))
    })
    .transpose()
}

fn remove(tx: &Transaction<'_>, name: &str) -> Result<u64, Fail> {
    if let Some(run) = holder(tx, name)? {
        return Err(Fail::Store(StoreError::SessionBusy {
            session: name.to_string(),
            run,
        }));
    }
    let mut removed = tx
        .prepare_cached("DELETE FROM sessions WHERE key = ?1 OR key = ?2")?
        .execute(params![name, format!("{FILE_PREFIX}{name}")])?;
    for p in SCOPED_PREFIXES {
        removed += tx
            .prepare_cached("DELETE FROM sessions WHERE substr(key, 1, length(?1)) = ?1")?
            .execute([format!("{p}{name}/")])?;
    }
    Ok(removed as u64)
}

fn expire(tx: &Transaction<'_>, prefix: &str, before: Ts) -> Result<Vec<String>, Fail> {
    // Each session under `prefix` (its conversation, its file, or both)
    // with its last save.
    let candidates: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT CASE WHEN substr(key, 1, length(?2)) = ?2 THEN substr(key, length(?2) + 1) ELSE key END AS name,
                    MAX(updated_at)
             FROM sessions
             WHERE (substr(key, 1, 1) <> '@' AND substr(key, 1, length(?1)) = ?1)
                OR substr(key, 1, length(?2) + length(?1)) = ?2 || ?1
             GROUP BY name ORDER BY name",
        )?
        .query_map(params![prefix, FILE_PREFIX], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut gone = Vec::new();
    for (name, last) in candidates {
        let used: bool = tx
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE session = ?1 AND (status IN {LIVE} OR created_at >= ?2))"
            ))?
            .query_row(params![name, before], |row| row.get(0))?;
        if last < before && !used {
            remove(tx, &name)?;
            gone.push(name);
        }
    }
    Ok(gone)
}
