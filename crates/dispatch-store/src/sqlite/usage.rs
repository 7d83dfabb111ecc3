//! The cost report on SQLite (see [`crate::UsageStore`]): one grouped read
//! of the `usage` events in the period, joined to their runs.

use async_trait::async_trait;
use rusqlite::{Row, Transaction, params};

use super::{Fail, SqliteStore};
use crate::usage::{NO_LABEL, UNKNOWN_MODEL, sort_rows};
use crate::{StoreResult, UsageBy, UsageQuery, UsageRow, UsageStore};

/// The key expression and any join it needs, per grouping.
fn key_of(by: UsageBy) -> (String, &'static str) {
    match by {
        UsageBy::Parcel => ("r.parcel_name".to_string(), ""),
        UsageBy::Project => ("r.project".to_string(), ""),
        UsageBy::Model => (
            format!("COALESCE(CAST(json_extract(e.data, '$.model') AS TEXT), '{UNKNOWN_MODEL}')"),
            "",
        ),
        UsageBy::Label => (
            format!("COALESCE(l.value, '{NO_LABEL}')"),
            "LEFT JOIN json_each(r.labels) l",
        ),
        UsageBy::Day => (
            "strftime('%Y-%m-%d', e.at / 1000, 'unixepoch')".to_string(),
            "",
        ),
    }
}

fn count(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, Option<i64>>(i)?.unwrap_or(0)).unwrap_or(0))
}

fn rows(tx: &Transaction<'_>, q: &UsageQuery) -> Result<Vec<UsageRow>, Fail> {
    let (key, join) = key_of(q.by);
    let sql = format!(
        "SELECT {key} AS k, COUNT(DISTINCT e.run_id), COUNT(*), \
         SUM(COALESCE(json_extract(e.data, '$.input_tokens'), 0)), \
         SUM(COALESCE(json_extract(e.data, '$.output_tokens'), 0)), \
         SUM(COALESCE(json_extract(e.data, '$.cost_usd'), 0.0)), \
         SUM(CASE WHEN json_extract(e.data, '$.estimated') = 1 THEN 1 ELSE 0 END), \
         SUM(CASE WHEN json_extract(e.data, '$.cost_usd') IS NULL THEN 1 ELSE 0 END) \
         FROM events e JOIN runs r ON r.id = e.run_id {join} \
         WHERE e.type = 'usage' AND e.at >= ?1 AND e.at < ?2 \
         AND (?3 = '[]' OR r.project IN (SELECT value FROM json_each(?3))) \
         GROUP BY k"
    );
    let mut found = tx
        .prepare(&sql)?
        .query_map(
            params![
                q.since.unwrap_or(i64::MIN),
                q.until.unwrap_or(i64::MAX),
                super::to_json("projects", &q.projects)?
            ],
            |row| {
                Ok(UsageRow {
                    key: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    runs: count(row, 1)?,
                    calls: count(row, 2)?,
                    input_tokens: count(row, 3)?,
                    output_tokens: count(row, 4)?,
                    cost_usd: row.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
                    estimated_calls: count(row, 6)?,
                    unpriced_calls: count(row, 7)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    sort_rows(&mut found);
    Ok(found)
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.read(|tx| rows(tx, query))
    }
}
