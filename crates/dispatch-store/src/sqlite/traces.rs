//! [`crate::TraceStore`] on SQLite: the runs of a batch one after the
//! other, in one read transaction (no round trips to save on an embedded
//! database).

use dispatch_core::RunId;
use rusqlite::{Transaction, params};

use super::events::{event_from_row, list_attempts};
use super::{Fail, runs};
use crate::{RunTrace, StoreError, TRACE_EVENT_KINDS};

pub(super) fn finished(tx: &Transaction<'_>, ids: &[RunId]) -> Result<Vec<RunTrace>, Fail> {
    let mut traces = Vec::new();
    for id in ids {
        let run = match runs::get(tx, id) {
            Ok(run) => run,
            Err(Fail::Store(StoreError::NotFound(_))) => continue,
            Err(e) => return Err(e),
        };
        if !run.status().is_terminal() {
            continue;
        }
        let attempts = list_attempts(tx, id)?;
        let traceparent = tx
            .prepare_cached("SELECT traceparent FROM runs WHERE id = ?1")?
            .query_row([id.as_str()], |row| row.get(0))?;
        let mut stmt = tx.prepare_cached(
            "SELECT seq, attempt, at, type, data FROM events \
             WHERE run_id = ?1 AND type IN (?2, ?3, ?4) ORDER BY seq",
        )?;
        let [a, b, c] = TRACE_EVENT_KINDS;
        let mut rows = stmt.query(params![id.as_str(), a, b, c])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            events.push(event_from_row(id, row)?);
        }
        traces.push(RunTrace {
            run,
            attempts,
            events,
            traceparent,
        });
    }
    Ok(traces)
}
