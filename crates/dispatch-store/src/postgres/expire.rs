//! Queue timeouts on PostgreSQL (see [`crate::QueueStore::expire_queued`]).
//! A queued run waits since its `ready_at`: its enqueue, its requeue, or the
//! end of the backoff it waits out.

use deadpool_postgres::Transaction;
use dispatch_core::{Operation, RunId, Ts};

use super::Fail;
use super::runs::{parse_id, u32_of};
use super::transitions::{Item, save};
use crate::queue_timeout::{EXPIRE_BATCH, expiry_write};

/// When a queued run with a queue timeout must have been claimed, in SQL
/// (the expression of the `runs_queue_deadline` index).
pub(super) const DEADLINE: &str = "(ready_at + queue_timeout_ms)";

/// Which queued runs have a deadline, in SQL (that index's predicate).
pub(super) const TIMED: &str = "status = 'queued' AND queue_timeout_ms IS NOT NULL";

pub(super) async fn expire(tx: &Transaction<'_>, now: Ts) -> Result<Vec<RunId>, Fail> {
    // A claim holding a row skips it, and so does this: whoever locks first wins.
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id, version, attempt, operation, queue_timeout_ms FROM runs \
             WHERE {TIMED} AND {DEADLINE} < $1 ORDER BY {DEADLINE} LIMIT $2 \
             FOR UPDATE SKIP LOCKED"
        ))
        .await?;
    let rows = tx.query(&stmt, &[&now, &EXPIRE_BATCH]).await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = parse_id(row.try_get(0)?)?;
        let operation: Operation = row
            .try_get::<_, &str>(3)?
            .parse()
            .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))?;
        let attempt = u32_of(&id, "attempt", row.try_get(2)?)?;
        let write = expiry_write(operation, attempt, row.try_get(4)?, now);
        due.push((id, row.try_get::<_, i64>(1)?, write));
    }
    let items: Vec<Item<'_>> = due
        .iter()
        .map(|(id, version, write)| Item {
            id,
            fence: None,
            expected: *version,
            writes: std::slice::from_ref(write),
        })
        .collect();
    let answers = save(tx, &items).await?;
    Ok(due
        .iter()
        .zip(answers)
        .filter(|(_, saved)| saved.is_ok())
        .map(|((id, _, _), _)| id.clone())
        .collect())
}
