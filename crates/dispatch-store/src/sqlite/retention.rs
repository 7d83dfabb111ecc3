//! Retention on SQLite (see [`crate::RetentionStore`]).

use std::collections::BTreeSet;

use dispatch_core::{RunId, Status, Ts};
use rusqlite::{OptionalExtension, Transaction, params};

use super::Fail;
use crate::retention::{Expired, RetentionCursor};

/// The runs a retention pass keeps, in SQL.
const KEPT: &str = "NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.run_id = runs.id AND d.replayed_by IS NULL) \
     AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.decision IS NULL) \
     AND NOT EXISTS (SELECT 1 FROM callbacks c WHERE c.run_id = runs.id AND c.done_at IS NULL)";

/// A run is terminal, in SQL: the condition of the partial index
/// `runs_by_end`, which a query uses only when it says the same. As
/// equalities, not an `IN` list, which SQLite would evaluate through an
/// ephemeral table on every claim and end of a run (schema migration 33).
const TERMINAL: &str = "(status = 'succeeded' OR status = 'failed' OR status = 'timed_out' \
     OR status = 'cancelled' OR status = 'stopped')";

/// Finished runs of status `?1` that ended before `?2`, after the cursor
/// `(?3, ?4)`, at most `?5`.
fn expired_runs_sql() -> String {
    format!(
        "SELECT id, updated_at, brief_sha256 FROM runs \
         WHERE status = ?1 AND {TERMINAL} AND updated_at < ?2 AND (updated_at, id) > (?3, ?4) AND {KEPT} \
         ORDER BY updated_at, id LIMIT ?5"
    )
}

/// Finished runs with events that ended before `?1`, after the cursor
/// `(?2, ?3)`, at most `?4`.
fn expired_events_sql() -> String {
    format!(
        "SELECT id, updated_at FROM runs \
         WHERE {TERMINAL} AND updated_at < ?1 AND (updated_at, id) > (?2, ?3) \
         AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id) AND {KEPT} \
         ORDER BY updated_at, id LIMIT ?4"
    )
}

fn cursor_of(after: Option<&RetentionCursor>) -> (Ts, &str) {
    after.map_or((i64::MIN, ""), |c| (c.updated_at, c.id.as_str()))
}

pub(super) fn expire_runs(
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
    let found: Vec<(String, Ts, String)> = tx
        .prepare_cached(&expired_runs_sql())?
        .query_map(
            params![status.as_str(), before, from_at, from_id, limit as i64],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut expired = Expired::default();
    let Some((last_id, last_at, _)) = found.last() else {
        return Ok(expired);
    };
    expired.cursor = Some(RetentionCursor {
        updated_at: *last_at,
        id: last_id.clone(),
    });
    let mut artifacts = BTreeSet::new();
    let mut briefs = BTreeSet::new();
    let mut logs = BTreeSet::new();
    for (id, _, brief) in &found {
        let mut archived =
            tx.prepare_cached("SELECT sha256 FROM run_log_archives WHERE run_id = ?1")?;
        for sha in archived.query_map([id], |row| row.get::<_, String>(0))? {
            logs.insert(sha?);
        }
        let mut shas = tx.prepare_cached("SELECT sha256 FROM artifacts WHERE run_id = ?1")?;
        for sha in shas.query_map([id], |row| row.get::<_, String>(0))? {
            artifacts.insert(sha?);
        }
        briefs.insert(brief.clone());
        for sql in [
            "DELETE FROM approvals WHERE run_id = ?1",
            "DELETE FROM dead_letters WHERE run_id = ?1",
            "DELETE FROM events WHERE run_id = ?1",
            "DELETE FROM attempts WHERE run_id = ?1",
            "DELETE FROM artifacts WHERE run_id = ?1",
            "DELETE FROM run_logs WHERE run_id = ?1",
            "DELETE FROM run_log_archives WHERE run_id = ?1",
            "DELETE FROM service_state WHERE run_id = ?1",
            "DELETE FROM callbacks WHERE run_id = ?1",
            "DELETE FROM runs WHERE id = ?1",
        ] {
            tx.prepare_cached(sql)?.execute([id])?;
        }
        expired.runs.push(parse_id(id)?);
    }
    for sha in artifacts {
        let used = tx
            .prepare_cached("SELECT 1 FROM artifacts WHERE sha256 = ?1 LIMIT 1")?
            .query_row([&sha], |_| Ok(()))
            .optional()?;
        if used.is_none() {
            expired.artifacts.push(sha);
        }
    }
    for sha in logs {
        let used = tx
            .prepare_cached("SELECT 1 FROM run_log_archives WHERE sha256 = ?1 LIMIT 1")?
            .query_row([&sha], |_| Ok(()))
            .optional()?;
        if used.is_none() {
            expired.logs.push(sha);
        }
    }
    for sha in briefs {
        let used = tx
            .prepare_cached("SELECT 1 FROM runs WHERE brief_sha256 = ?1 LIMIT 1")?
            .query_row([&sha], |_| Ok(()))
            .optional()?;
        if used.is_none() {
            tx.prepare_cached("DELETE FROM briefs WHERE sha256 = ?1")?
                .execute([&sha])?;
            expired.briefs.push(sha);
        }
    }
    Ok(expired)
}

pub(super) fn expire_events(
    tx: &Transaction<'_>,
    before: Ts,
    after: Option<&RetentionCursor>,
    limit: usize,
) -> Result<(usize, Option<RetentionCursor>), Fail> {
    let (from_at, from_id) = cursor_of(after);
    let found: Vec<(String, Ts)> = tx
        .prepare_cached(&expired_events_sql())?
        .query_map(params![before, from_at, from_id, limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, _) in &found {
        tx.prepare_cached("DELETE FROM events WHERE run_id = ?1")?
            .execute([id])?;
    }
    let cursor = found.last().map(|(id, at)| RetentionCursor {
        updated_at: *at,
        id: id.clone(),
    });
    Ok((found.len(), cursor))
}

fn parse_id(id: &str) -> Result<RunId, Fail> {
    id.parse()
        .map_err(|_| Fail::Corrupt(format!("run id `{id}` is not a run id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retention pass reads finished runs through `runs_by_end`: its
    /// queries say the index's condition exactly as the index does.
    #[test]
    fn retention_reads_finished_runs_through_their_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dispatch.db");
        drop(
            crate::sqlite::SqliteStore::open(&path, std::time::Duration::from_secs(5))
                .expect("the store opens"),
        );
        let conn = rusqlite::Connection::open(&path).expect("the database");
        for sql in [expired_runs_sql(), expired_events_sql()] {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("a plan");
            let unbound = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(unbound), |row| {
                    row.get::<_, String>(3)
                })
                .expect("its steps")
                .collect::<Result<_, _>>()
                .expect("steps");
            assert!(
                plan.iter().any(|step| step.contains("runs_by_end")),
                "{sql}\n{plan:#?}"
            );
        }
    }
}
