//! Queue timeouts on SQLite (see [`crate::QueueStore::expire_queued`]). A
//! queued run waits since its last state change (its enqueue or requeue), or
//! since its backoff ended when it waits one out.

use dispatch_core::{Operation, RunId, Ts};
use rusqlite::{Transaction, params};

use super::Fail;
use super::runs::transition;
use crate::queue_timeout::{EXPIRE_BATCH, expiry_write};

/// When a queued run with a queue timeout must have been claimed, in SQL.
pub(super) const DEADLINE: &str = "max(updated_at, COALESCE(json_extract(state, '$.not_before'), 0)) \
     + queue_timeout_ms";

/// Which queued runs have a deadline, in SQL (the `runs_queue_timeout` index).
pub(super) const TIMED: &str = "status = 'queued' AND queue_timeout_ms IS NOT NULL";

pub(super) fn expire(tx: &Transaction<'_>, now: Ts) -> Result<Vec<RunId>, Fail> {
    let due: Vec<(String, i64, u32, String, i64)> = tx
        .prepare_cached(&format!(
            "SELECT id, version, attempt, operation, queue_timeout_ms FROM runs \
             WHERE {TIMED} AND {DEADLINE} < ?1 ORDER BY id LIMIT ?2"
        ))?
        .query_map(params![now, EXPIRE_BATCH], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut ended = Vec::with_capacity(due.len());
    for (id, version, attempt, operation, timeout_ms) in due {
        let id: RunId = id
            .parse()
            .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?;
        let operation: Operation = operation
            .parse()
            .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))?;
        let write = expiry_write(operation, attempt, timeout_ms, now);
        transition(tx, &id, version, std::slice::from_ref(&write))?;
        ended.push(id);
    }
    Ok(ended)
}
