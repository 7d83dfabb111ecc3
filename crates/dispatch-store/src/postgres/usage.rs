//! The cost report on PostgreSQL (see [`crate::UsageStore`]): one grouped
//! read of the `usage` events in the period, joined to their runs.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Fail, PgStore};
use crate::usage::{NO_LABEL, UNKNOWN_MODEL, sort_rows};
use crate::{StoreResult, UsageBy, UsageQuery, UsageRow, UsageStore};

/// The key expression and any join it needs, per grouping.
fn key_of(by: UsageBy) -> (String, &'static str) {
    match by {
        UsageBy::Parcel => ("r.parcel_name".to_string(), ""),
        UsageBy::Project => ("r.project".to_string(), ""),
        UsageBy::Model => (format!("COALESCE(d->>'model', '{UNKNOWN_MODEL}')"), ""),
        UsageBy::Label => (
            format!("COALESCE(l.value, '{NO_LABEL}')"),
            "LEFT JOIN LATERAL unnest(r.labels) AS l(value) ON true",
        ),
        UsageBy::Day => (
            "to_char(to_timestamp(e.at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')".to_string(),
            "",
        ),
    }
}

fn count(row: &Row, i: usize) -> Result<u64, Fail> {
    Ok(u64::try_from(row.try_get::<_, Option<i64>>(i)?.unwrap_or(0)).unwrap_or(0))
}

fn row(row: &Row) -> Result<UsageRow, Fail> {
    Ok(UsageRow {
        key: row.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
        runs: count(row, 1)?,
        calls: count(row, 2)?,
        input_tokens: count(row, 3)?,
        output_tokens: count(row, 4)?,
        cost_usd: row.try_get::<_, Option<f64>>(5)?.unwrap_or(0.0),
        estimated_calls: count(row, 6)?,
        unpriced_calls: count(row, 7)?,
    })
}

async fn rows<C: GenericClient>(client: &C, q: &UsageQuery) -> Result<Vec<UsageRow>, Fail> {
    let (key, join) = key_of(q.by);
    // Sums of bigints are numerics: cast back to what the row holds.
    let sql = format!(
        "SELECT {key} AS k, COUNT(DISTINCT e.run_id)::bigint, COUNT(*)::bigint, \
         SUM(COALESCE((d->>'input_tokens')::bigint, 0))::bigint, \
         SUM(COALESCE((d->>'output_tokens')::bigint, 0))::bigint, \
         SUM(COALESCE((d->>'cost_usd')::float8, 0))::float8, \
         SUM(CASE WHEN d->>'estimated' = 'true' THEN 1 ELSE 0 END)::bigint, \
         SUM(CASE WHEN d->'cost_usd' IS NULL OR d->'cost_usd' = 'null'::jsonb THEN 1 ELSE 0 END)::bigint \
         FROM events e CROSS JOIN LATERAL (SELECT e.data::jsonb AS d) AS j \
         JOIN runs r ON r.id = e.run_id {join} \
         WHERE e.type = 'usage' AND e.at >= $1 AND e.at < $2 \
         AND (cardinality($3::text[]) = 0 OR r.project = ANY($3::text[])) \
         GROUP BY k"
    );
    let since = q.since.unwrap_or(i64::MIN);
    let until = q.until.unwrap_or(i64::MAX);
    let mut found = client
        .query(&sql, &[&since, &until, &q.projects])
        .await?
        .iter()
        .map(row)
        .collect::<Result<Vec<_>, _>>()?;
    sort_rows(&mut found);
    Ok(found)
}

#[async_trait]
impl UsageStore for PgStore {
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        read!(self, |client| rows(&client, query))
    }
}
