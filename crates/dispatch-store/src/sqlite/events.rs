//! The event log (and the usage totals it feeds), attempts and artifacts.

use dispatch_core::{NewEvent, RunId, Status};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::runs::exists;
use super::{Fail, to_json};
use crate::{Artifact, Attempt, Event, StoreError};

pub(super) fn insert_event(
    tx: &Transaction<'_>,
    run: &RunId,
    event: &NewEvent,
) -> Result<(), Fail> {
    tx.prepare_cached(
        "INSERT INTO events (run_id, attempt, at, type, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        run.as_str(),
        event.attempt,
        event.at,
        event.kind,
        to_json("event data", &event.data)?,
    ])?;
    Ok(())
}

/// `NotFound` unless the run exists.
fn require_run(tx: &Transaction<'_>, run: &RunId) -> Result<(), Fail> {
    if exists(tx, run)? {
        Ok(())
    } else {
        Err(Fail::Store(StoreError::NotFound(run.to_string())))
    }
}

/// An empty list for a run that exists; `NotFound` for one that does not.
fn empty_or_missing<T>(tx: &Transaction<'_>, run: &RunId, found: Vec<T>) -> Result<Vec<T>, Fail> {
    if found.is_empty() {
        require_run(tx, run)?;
    }
    Ok(found)
}

pub(super) fn append(tx: &Transaction<'_>, run: &RunId, events: &[NewEvent]) -> Result<(), Fail> {
    require_run(tx, run)?;
    let mut total = dispatch_core::event::Usage::default();
    let mut any_usage = false;
    for event in events {
        insert_event(tx, run, event)?;
        if let Some(usage) = event.usage() {
            total.add(usage);
            any_usage = true;
        }
    }
    if any_usage {
        // Not a state change: the version stays, so usage never breaks a CAS.
        let (tokens, cost, policy): (u64, f64, Option<String>) = tx
            .prepare_cached(
                "UPDATE runs SET input_tokens = input_tokens + ?2, \
                 output_tokens = output_tokens + ?3, cost_usd = cost_usd + ?4 WHERE id = ?1 \
                 RETURNING input_tokens + output_tokens, cost_usd, policy",
            )?
            .query_row(
                params![
                    run.as_str(),
                    total.input_tokens,
                    total.output_tokens,
                    total.cost_usd,
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
        // A mark of the run's budget crossed: a notification, with the usage.
        let before = (
            tokens.saturating_sub(total.total_tokens()),
            cost - total.cost_usd,
        );
        let at = events.last().map_or(0, |e| e.at);
        let attempt = events.last().map_or(0, |e| e.attempt);
        super::quotas::account(tx, run, (total.total_tokens(), total.cost_usd), attempt, at)?;
        super::notifications::enqueue_budget(
            tx,
            run,
            before,
            (tokens, cost),
            policy.as_deref(),
            at,
        )?;
    }
    Ok(())
}

pub(super) fn list(
    tx: &Transaction<'_>,
    run: &RunId,
    after: i64,
    limit: usize,
) -> Result<Vec<Event>, Fail> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = tx.prepare_cached(
        "SELECT seq, attempt, at, type, data FROM events \
         WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![run.as_str(), after, limit])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event_from_row(run, row)?);
    }
    empty_or_missing(tx, run, events)
}

pub(super) fn latest(
    tx: &Transaction<'_>,
    run: &RunId,
    kinds: &[&str],
) -> Result<Option<Event>, Fail> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq, attempt, at, type, data FROM events \
         WHERE run_id = ?1 AND type IN (SELECT value FROM json_each(?2)) \
         ORDER BY seq DESC LIMIT 1",
    )?;
    let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
    let mut rows = stmt.query(params![run.as_str(), kinds])?;
    match rows.next()? {
        Some(row) => Ok(Some(event_from_row(run, row)?)),
        None => Ok(None),
    }
}

pub(super) fn event_from_row(run: &RunId, row: &Row<'_>) -> Result<Event, Fail> {
    let seq: i64 = row.get(0)?;
    let data = row.get_ref(4)?.as_str()?;
    let data = serde_json::from_str(data)
        .map_err(|e| Fail::Corrupt(format!("run {run}: event {seq} has unreadable data: {e}")))?;
    Ok(Event {
        seq,
        run_id: run.clone(),
        event: NewEvent {
            kind: row.get(3)?,
            attempt: row.get(1)?,
            at: row.get(2)?,
            data,
        },
    })
}

pub(super) fn list_attempts(tx: &Transaction<'_>, run: &RunId) -> Result<Vec<Attempt>, Fail> {
    let mut stmt = tx.prepare_cached(
        "SELECT number, started_at, ended_at, status, exit_code, error, worker FROM attempts \
         WHERE run_id = ?1 ORDER BY number",
    )?;
    let mut rows = stmt.query([run.as_str()])?;
    let mut attempts = Vec::new();
    while let Some(row) = rows.next()? {
        attempts.push(attempt_from_row(run, row)?);
    }
    empty_or_missing(tx, run, attempts)
}

/// Decodes `number, started_at, ended_at, status, exit_code, error, worker`.
pub(super) fn attempt_from_row(run: &RunId, row: &Row<'_>) -> Result<Attempt, Fail> {
    let status = match row.get_ref(3)?.as_str_or_null()? {
        None => None,
        Some(text) => Some(
            text.parse::<Status>()
                .map_err(|e| Fail::Corrupt(format!("run {run}: attempt status: {e}")))?,
        ),
    };
    Ok(Attempt {
        number: row.get(0)?,
        started_at: row.get(1)?,
        ended_at: row.get(2)?,
        status,
        exit_code: row.get(4)?,
        error: row.get(5)?,
        worker: row.get(6)?,
    })
}

/// Records artifacts; a name recorded again takes the new digest and size.
pub(super) fn add_artifacts(
    tx: &Transaction<'_>,
    run: &RunId,
    artifacts: &[Artifact],
) -> Result<(), Fail> {
    require_run(tx, run)?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO artifacts (run_id, name, sha256, size) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (run_id, name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size",
    )?;
    for artifact in artifacts {
        stmt.execute(params![
            run.as_str(),
            artifact.name,
            artifact.sha256,
            artifact.size,
        ])?;
    }
    Ok(())
}

pub(super) fn list_artifacts(tx: &Transaction<'_>, run: &RunId) -> Result<Vec<Artifact>, Fail> {
    let mut stmt = tx.prepare_cached(
        "SELECT name, sha256, size FROM artifacts WHERE run_id = ?1 ORDER BY name",
    )?;
    let artifacts = stmt
        .query_map([run.as_str()], |row| {
            Ok(Artifact {
                name: row.get(0)?,
                sha256: row.get(1)?,
                size: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    empty_or_missing(tx, run, artifacts)
}

pub(super) fn artifact_in_use(tx: &Transaction<'_>, sha256: &str) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM artifacts WHERE sha256 = ?1 LIMIT 1")?
        .query_row([sha256], |_| Ok(()))
        .optional()?
        .is_some())
}
