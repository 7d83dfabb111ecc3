//! The notification outbox on SQLite (see [`crate::NotificationStore`]).

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};
use rusqlite::{Row, Transaction, params};

use super::runs::parse_id;
use super::{Fail, SqliteStore, to_json};
use crate::notifications::{NewNotification, Notification, NotificationCounts, Settle};
use crate::{NotificationStore, StoreError, StoreResult};

const COLUMNS: &str =
    "seq, key, run_id, kind, data, created_at, due_at, tries, sent, last_error, outcome, done_at";

/// Enqueues `n` in the caller's transaction (the change that caused it).
pub(super) fn enqueue(tx: &Transaction<'_>, n: &NewNotification) -> Result<bool, Fail> {
    let added = tx
        .prepare_cached(
            "INSERT INTO notifications (key, run_id, kind, data, created_at, due_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (key) DO NOTHING",
        )?
        .execute(params![
            n.key,
            n.run_id.as_str(),
            n.kind,
            to_json("notification", &n.data)?,
            n.at
        ])?;
    Ok(added == 1)
}

/// The [`crate::notifications::BUDGET_THRESHOLD`] rows of run `run`'s usage
/// going from `before` to `after`, when its policy has hard limits.
pub(super) fn enqueue_budget(
    tx: &Transaction<'_>,
    run: &RunId,
    before: (u64, f64),
    after: (u64, f64),
    policy: Option<&str>,
    at: Ts,
) -> Result<(), Fail> {
    let Some(limits) = crate::notifications::limits_of(policy) else {
        return Ok(());
    };
    for n in crate::notifications::budget_crossed(run, before, after, &limits, at) {
        enqueue(tx, &n)?;
    }
    Ok(())
}

fn from_row(row: &Row<'_>) -> Result<Notification, Fail> {
    let run: String = row.get(2)?;
    let data: String = row.get(4)?;
    let sent: String = row.get(8)?;
    Ok(Notification {
        seq: row.get(0)?,
        key: row.get(1)?,
        run_id: parse_id(&run)?,
        kind: row.get(3)?,
        data: serde_json::from_str(&data)
            .map_err(|e| Fail::Corrupt(format!("notification data: {e}")))?,
        created_at: row.get(5)?,
        due_at: row.get(6)?,
        tries: row.get(7)?,
        sent: serde_json::from_str(&sent)
            .map_err(|e| Fail::Corrupt(format!("notification channels: {e}")))?,
        last_error: row.get(9)?,
        outcome: row.get(10)?,
        done_at: row.get(11)?,
    })
}

fn collect(
    tx: &Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Notification>, Fail> {
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn enqueue_notification(&self, n: &NewNotification) -> StoreResult<bool> {
        self.write(|tx| {
            if !super::runs::exists(tx, &n.run_id)? {
                return Err(Fail::Store(StoreError::NotFound(n.run_id.to_string())));
            }
            enqueue(tx, n)
        })
    }

    async fn claim_notifications(
        &self,
        now: Ts,
        hold_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Notification>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            collect(
                tx,
                &format!(
                    "UPDATE notifications SET due_at = ?2 WHERE seq IN (SELECT seq FROM notifications \
                     WHERE done_at IS NULL AND due_at <= ?1 ORDER BY due_at, seq LIMIT ?3) \
                     RETURNING {COLUMNS}"
                ),
                params![now, now.saturating_add(hold_ms), limit],
            )
            .map(|mut v| {
                v.sort_by_key(|n| n.seq);
                v
            })
        })
    }

    async fn settle_notification(&self, seq: i64, s: &Settle) -> StoreResult<()> {
        self.write(|tx| {
            let done = s.outcome.as_ref().map(|_| s.at);
            tx.prepare_cached(
                "UPDATE notifications SET sent = ?2, tries = ?3, last_error = ?4, outcome = ?5, \
                 done_at = ?6, due_at = ?7 WHERE seq = ?1 AND done_at IS NULL",
            )?
            .execute(params![
                seq,
                to_json("notification channels", &s.sent)?,
                s.tries,
                s.error,
                s.outcome,
                done,
                s.next_at
            ])?;
            Ok(())
        })
    }

    async fn list_notifications(&self, limit: usize) -> StoreResult<Vec<Notification>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            collect(
                tx,
                &format!("SELECT {COLUMNS} FROM notifications ORDER BY seq DESC LIMIT ?1"),
                [limit],
            )
        })
    }

    async fn notification_counts(&self) -> StoreResult<NotificationCounts> {
        self.read(|tx| {
            let mut c = NotificationCounts::default();
            let mut stmt = tx.prepare_cached(
                "SELECT coalesce(outcome, CASE WHEN tries > 0 THEN 'retrying' ELSE 'pending' END), \
                 count(*) FROM notifications GROUP BY 1",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (state, n): (String, u64) = (row.get(0)?, row.get(1)?);
                match state.as_str() {
                    "pending" => c.pending += n,
                    "retrying" => {
                        c.pending += n;
                        c.retrying += n;
                    }
                    "delivered" => c.delivered += n,
                    "failed" => c.failed += n,
                    _ => c.skipped += n,
                }
            }
            Ok(c)
        })
    }
}
