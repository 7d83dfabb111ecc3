//! [`crate::TraceStore`] on PostgreSQL: three statements for a whole batch
//! of runs (the runs with their `traceparent`, their attempts, their traced
//! events), whatever its size.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use dispatch_core::RunId;

use async_trait::async_trait;

use super::events::{attempt_from_row, event_from_row};
use super::runs::{parse_id, run_columns, run_from_row};
use super::{Fail, PgStore};
use crate::StoreResult;
use crate::{RunTrace, TRACE_EVENT_KINDS};

pub(super) async fn finished(tx: &Transaction<'_>, ids: &[RunId]) -> Result<Vec<RunTrace>, Fail> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = ids.iter().map(RunId::as_str).collect();
    let stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            run_columns!(),
            ", traceparent FROM runs WHERE id = ANY($1::text[]) \
             AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped')"
        ))
        .await?;
    let mut traces = Vec::new();
    let mut index = HashMap::new();
    for row in tx.query(&stmt, &[&ids]).await? {
        let run = run_from_row(&row)?;
        if !run.status().is_terminal() {
            continue;
        }
        index.insert(run.id.clone(), traces.len());
        traces.push(RunTrace {
            run,
            attempts: Vec::new(),
            events: Vec::new(),
            traceparent: row.try_get(22)?,
        });
    }
    if traces.is_empty() {
        return Ok(traces);
    }
    let finished: Vec<String> = traces.iter().map(|t| t.run.id.to_string()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT number, started_at, ended_at, status, exit_code, error, worker, run_id \
             FROM attempts WHERE run_id = ANY($1::text[]) ORDER BY run_id, number",
        )
        .await?;
    for row in tx.query(&stmt, &[&finished]).await? {
        let id = parse_id(row.try_get(7)?)?;
        if let Some(&i) = index.get(&id) {
            let attempt = attempt_from_row(&id, &row)?;
            traces[i].attempts.push(attempt);
        }
    }
    let kinds: Vec<&str> = TRACE_EVENT_KINDS.to_vec();
    let stmt = tx
        .prepare_cached(
            "SELECT seq, attempt, at, type, data, run_id FROM events \
             WHERE run_id = ANY($1::text[]) AND type = ANY($2::text[]) ORDER BY run_id, seq",
        )
        .await?;
    for row in tx.query(&stmt, &[&finished, &kinds]).await? {
        let id = parse_id(row.try_get(5)?)?;
        if let Some(&i) = index.get(&id) {
            let event = event_from_row(&id, &row)?;
            traces[i].events.push(event);
        }
    }
    Ok(traces)
}

#[async_trait]
impl crate::TraceStore for PgStore {
    async fn finished_traces(&self, ids: &[RunId]) -> StoreResult<Vec<crate::RunTrace>> {
        in_tx!(self, |tx| super::traces::finished(&tx, ids))
    }
}
