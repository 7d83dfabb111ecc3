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

/// One statement deletes a batch and says what went: the runs (kind `r`,
/// with the cursor's `updated_at`), then the artifacts (`a`), log archives
/// (`l`) and briefs (`b`) no remaining run has. Data-modifying CTEs all run
/// to completion; the foreign keys (`NO ACTION`) are checked at the
/// statement's end, when the children are gone too. One round trip instead
/// of eighteen: a batch's cost to the database is its deletes alone.
const EXPIRE_RUNS: &str = "WITH doomed AS MATERIALIZED ( \
       SELECT id, updated_at, brief_sha256 FROM runs \
       WHERE status = $1 AND status IN {TERMINAL} AND updated_at < $2 AND (updated_at, id) > ($3, $4) \
       AND {KEPT} \
       ORDER BY updated_at, id LIMIT $5 FOR UPDATE SKIP LOCKED), \
     ids AS MATERIALIZED (SELECT coalesce(array_agg(id), '{}') AS a FROM doomed), \
     arts AS MATERIALIZED (SELECT DISTINCT sha256 FROM artifacts WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     logs AS MATERIALIZED (SELECT DISTINCT sha256 FROM run_log_archives WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     gone_briefs AS MATERIALIZED (SELECT DISTINCT d.brief_sha256 AS s FROM doomed d \
       WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.brief_sha256 = d.brief_sha256 \
         AND r.id <> ALL((SELECT a FROM ids)::text[]))), \
     d1 AS (DELETE FROM approvals WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d2 AS (DELETE FROM dead_letters WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d3 AS (DELETE FROM events WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d4 AS (DELETE FROM attempts WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d5 AS (DELETE FROM artifacts WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d6 AS (DELETE FROM run_logs WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d7 AS (DELETE FROM run_log_archives WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d8 AS (DELETE FROM callbacks WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d8s AS (DELETE FROM service_state WHERE run_id = ANY((SELECT a FROM ids)::text[])), \
     d9 AS (DELETE FROM runs WHERE id = ANY((SELECT a FROM ids)::text[])), \
     d10 AS (DELETE FROM briefs WHERE sha256 IN (SELECT s FROM gone_briefs)) \
     SELECT 'r' AS kind, id AS name, updated_at FROM doomed \
     UNION ALL SELECT 'a', sha256, 0 FROM arts WHERE NOT EXISTS (SELECT 1 FROM artifacts x \
       WHERE x.sha256 = arts.sha256 AND x.run_id <> ALL((SELECT a FROM ids)::text[])) \
     UNION ALL SELECT 'l', sha256, 0 FROM logs WHERE NOT EXISTS (SELECT 1 FROM run_log_archives x \
       WHERE x.sha256 = logs.sha256 AND x.run_id <> ALL((SELECT a FROM ids)::text[])) \
     UNION ALL SELECT 'b', s, 0 FROM gone_briefs \
     ORDER BY 1, 3, 2";

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
        .prepare_cached(
            &EXPIRE_RUNS
                .replace("{KEPT}", KEPT)
                .replace("{TERMINAL}", TERMINAL),
        )
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
    // Sorted by kind, then the runs by (updated_at, id): the cursor is the
    // last run; the digests come sorted.
    let mut expired = Expired::default();
    for row in &rows {
        let kind: &str = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        match kind {
            "r" => {
                expired.runs.push(parse_id(&name)?);
                expired.cursor = Some(RetentionCursor {
                    updated_at: row.try_get(2)?,
                    id: name,
                });
            }
            "a" => expired.artifacts.push(name),
            "l" => expired.logs.push(name),
            _ => expired.briefs.push(name),
        }
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
