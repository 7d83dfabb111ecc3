//! Retention on PostgreSQL (see [`crate::RetentionStore`]). The runs of a
//! batch are locked with `SKIP LOCKED`: two servers running retention at
//! once share the work instead of waiting on each other.

use deadpool_postgres::Transaction;
use dispatch_core::{RunId, Status, Ts};

use super::Fail;
use crate::retention::{Expired, RetentionCursor};

/// The runs a retention pass keeps, in SQL.
const KEPT: &str = "NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.run_id = runs.id AND d.replayed_by IS NULL) \
     AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.decision IS NULL) \
     AND NOT EXISTS (SELECT 1 FROM callbacks c WHERE c.run_id = runs.id AND c.done_at IS NULL)";

/// The terminal statuses, in SQL.
const TERMINAL: &str = "('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped')";

fn cursor_of(after: Option<&RetentionCursor>) -> (Ts, &str) {
    after.map_or((i64::MIN, ""), |c| (c.updated_at, c.id.as_str()))
}

pub(super) async fn expire_runs(
    tx: &Transaction<'_>,
    status: Status,
    before: Ts,
    after: Option<&RetentionCursor>,
    limit: usize,
) -> Result<Expired, Fail> {
    if !status.is_terminal() {
        return Ok(Expired::default());
    }
    let (from_at, from_id) = cursor_of(after);
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id, updated_at FROM runs \
             WHERE status = $1 AND updated_at < $2 AND (updated_at, id) > ($3, $4) AND {KEPT} \
             ORDER BY updated_at, id LIMIT $5 FOR UPDATE SKIP LOCKED"
        ))
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &status.as_str(),
                &before,
                &from_at,
                &from_id,
                &(limit as i64),
            ],
        )
        .await?;
    let mut expired = Expired::default();
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get(0)?;
        let at: Ts = row.try_get(1)?;
        expired.cursor = Some(RetentionCursor {
            updated_at: at,
            id: id.clone(),
        });
        ids.push(id);
    }
    if ids.is_empty() {
        return Ok(expired);
    }
    let stmt = tx
        .prepare_cached("SELECT DISTINCT sha256 FROM artifacts WHERE run_id = ANY($1)")
        .await?;
    let shas: Vec<String> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let stmt = tx
        .prepare_cached("SELECT DISTINCT sha256 FROM run_log_archives WHERE run_id = ANY($1)")
        .await?;
    let logs: Vec<String> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let stmt = tx
        .prepare_cached("SELECT DISTINCT brief_sha256 FROM runs WHERE id = ANY($1)")
        .await?;
    let briefs: Vec<String> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for sql in [
        "DELETE FROM approvals WHERE run_id = ANY($1)",
        "DELETE FROM dead_letters WHERE run_id = ANY($1)",
        "DELETE FROM events WHERE run_id = ANY($1)",
        "DELETE FROM attempts WHERE run_id = ANY($1)",
        "DELETE FROM artifacts WHERE run_id = ANY($1)",
        "DELETE FROM run_logs WHERE run_id = ANY($1)",
        "DELETE FROM run_log_archives WHERE run_id = ANY($1)",
        "DELETE FROM callbacks WHERE run_id = ANY($1)",
        "DELETE FROM runs WHERE id = ANY($1)",
    ] {
        let stmt = tx.prepare_cached(sql).await?;
        tx.execute(&stmt, &[&ids]).await?;
    }
    let stmt = tx
        .prepare_cached(
            "SELECT s FROM unnest($1::text[]) AS s \
             WHERE NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = s) ORDER BY s",
        )
        .await?;
    for row in tx.query(&stmt, &[&shas]).await? {
        expired.artifacts.push(row.try_get(0)?);
    }
    let stmt = tx
        .prepare_cached(
            "SELECT s FROM unnest($1::text[]) AS s \
             WHERE NOT EXISTS (SELECT 1 FROM run_log_archives l WHERE l.sha256 = s) ORDER BY s",
        )
        .await?;
    for row in tx.query(&stmt, &[&logs]).await? {
        expired.logs.push(row.try_get(0)?);
    }
    let stmt = tx
        .prepare_cached(
            "SELECT s FROM unnest($1::text[]) AS s \
             WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.brief_sha256 = s) ORDER BY s",
        )
        .await?;
    for row in tx.query(&stmt, &[&briefs]).await? {
        expired.briefs.push(row.try_get(0)?);
    }
    let stmt = tx
        .prepare_cached("DELETE FROM briefs WHERE sha256 = ANY($1)")
        .await?;
    tx.execute(&stmt, &[&expired.briefs]).await?;
    for id in ids {
        expired.runs.push(parse_id(&id)?);
    }
    Ok(expired)
}

pub(super) async fn expire_events(
    tx: &Transaction<'_>,
    before: Ts,
    after: Option<&RetentionCursor>,
    limit: usize,
) -> Result<(usize, Option<RetentionCursor>), Fail> {
    let (from_at, from_id) = cursor_of(after);
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id, updated_at FROM runs \
             WHERE status IN {TERMINAL} AND updated_at < $1 AND (updated_at, id) > ($2, $3) \
             AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id) AND {KEPT} \
             ORDER BY updated_at, id LIMIT $4 FOR UPDATE SKIP LOCKED"
        ))
        .await?;
    let rows = tx
        .query(&stmt, &[&before, &from_at, &from_id, &(limit as i64)])
        .await?;
    let mut ids: Vec<String> = Vec::with_capacity(rows.len());
    let mut cursor = None;
    for row in &rows {
        let id: String = row.try_get(0)?;
        cursor = Some(RetentionCursor {
            updated_at: row.try_get(1)?,
            id: id.clone(),
        });
        ids.push(id);
    }
    let stmt = tx
        .prepare_cached("DELETE FROM events WHERE run_id = ANY($1)")
        .await?;
    tx.execute(&stmt, &[&ids]).await?;
    Ok((ids.len(), cursor))
}

fn parse_id(id: &str) -> Result<RunId, Fail> {
    id.parse()
        .map_err(|_| Fail::Corrupt(format!("run id `{id}` is not a run id")))
}
