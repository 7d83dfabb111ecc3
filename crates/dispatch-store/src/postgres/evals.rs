//! Eval reports on PostgreSQL (see [`crate::EvalStore`]).

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::Fail;
use crate::EvalRecord;

fn record(row: &Row) -> Result<EvalRecord, Fail> {
    let report: String = row.try_get(4)?;
    Ok(EvalRecord {
        id: row.try_get(0)?,
        parcel_digest: row.try_get(1)?,
        parcel_name: row.try_get(2)?,
        created_at: row.try_get(3)?,
        report: serde_json::from_str(&report).unwrap_or(serde_json::Value::Null),
    })
}

pub(super) async fn put(tx: &Transaction<'_>, e: &EvalRecord) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO evals (id, parcel_digest, parcel_name, created_at, report) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let report = e.report.to_string();
    let n = tx
        .execute(
            &stmt,
            &[
                &e.id,
                &e.parcel_digest,
                &e.parcel_name,
                &e.created_at,
                &report,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn with_prefix(
    tx: &Transaction<'_>,
    prefix: &str,
    limit: u32,
) -> Result<Vec<EvalRecord>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, parcel_digest, parcel_name, created_at, report FROM evals \
             WHERE starts_with(id, $1) ORDER BY id LIMIT $2",
        )
        .await?;
    let limit = i64::from(limit);
    tx.query(&stmt, &[&prefix, &limit])
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(super) async fn latest_of(
    tx: &Transaction<'_>,
    digest: &str,
) -> Result<Option<EvalRecord>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, parcel_digest, parcel_name, created_at, report FROM evals \
             WHERE starts_with(parcel_digest, $1) ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .await?;
    tx.query_opt(&stmt, &[&digest])
        .await?
        .map(|row| record(&row))
        .transpose()
}
