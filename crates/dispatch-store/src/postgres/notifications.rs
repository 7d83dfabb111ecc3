//! The notification outbox on PostgreSQL (see [`crate::NotificationStore`]).

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::{RunId, Ts};
use tokio_postgres::Row;

use super::runs::{not_found, parse_id};
use super::{Fail, PgStore, to_json};
use crate::notifications::{NewNotification, Notification, NotificationCounts, Settle};
use crate::{NotificationStore, StoreResult};

const COLUMNS: &str =
    "seq, key, run_id, kind, data, created_at, due_at, tries, sent, last_error, outcome, done_at";

/// Enqueues every one of `ns` in the caller's transaction (the change that
/// caused them), one statement; a key enqueued before is skipped.
pub(super) async fn enqueue(tx: &Transaction<'_>, ns: &[NewNotification]) -> Result<u64, Fail> {
    if ns.is_empty() {
        return Ok(0);
    }
    let (mut keys, mut runs, mut kinds, mut datas, mut ats) =
        (vec![], vec![], vec![], vec![], vec![]);
    for n in ns {
        keys.push(n.key.as_str());
        runs.push(n.run_id.as_str());
        kinds.push(n.kind.as_str());
        datas.push(to_json("notification", &n.data)?);
        ats.push(n.at);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notifications (key, run_id, kind, data, created_at, due_at) \
             SELECT k, r, t, d, a, a FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::bigint[]) AS n(k, r, t, d, a) ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    Ok(tx
        .execute(&stmt, &[&keys, &runs, &kinds, &datas, &ats])
        .await?)
}

/// The [`crate::notifications::BUDGET_THRESHOLD`] rows of run `run`'s usage
/// going from `before` to `after`, when its policy has hard limits.
pub(super) async fn enqueue_budget(
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
    let crossed = crate::notifications::budget_crossed(run, before, after, &limits, at);
    enqueue(tx, &crossed).await.map(|_| ())
}

fn from_row(row: &Row) -> Result<Notification, Fail> {
    let run: String = row.try_get(2)?;
    let data: String = row.try_get(4)?;
    let sent: String = row.try_get(8)?;
    let tries: i64 = row.try_get(7)?;
    Ok(Notification {
        seq: row.try_get(0)?,
        key: row.try_get(1)?,
        run_id: parse_id(&run)?,
        kind: row.try_get(3)?,
        data: serde_json::from_str(&data)
            .map_err(|e| Fail::Corrupt(format!("notification data: {e}")))?,
        created_at: row.try_get(5)?,
        due_at: row.try_get(6)?,
        tries: u32::try_from(tries).unwrap_or(u32::MAX),
        sent: serde_json::from_str(&sent)
            .map_err(|e| Fail::Corrupt(format!("notification channels: {e}")))?,
        last_error: row.try_get(9)?,
        outcome: row.try_get(10)?,
        done_at: row.try_get(11)?,
    })
}

#[async_trait]
impl NotificationStore for PgStore {
    async fn enqueue_notification(&self, n: &NewNotification) -> StoreResult<bool> {
        in_tx!(self, |tx| async {
            let stmt = tx
                .prepare_cached("SELECT 1 FROM runs WHERE id = $1")
                .await?;
            if tx.query_opt(&stmt, &[&n.run_id.as_str()]).await?.is_none() {
                return Err(not_found(&n.run_id));
            }
            Ok::<_, Fail>(enqueue(&tx, std::slice::from_ref(n)).await? == 1)
        })
    }

    async fn claim_notifications(
        &self,
        now: Ts,
        hold_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Notification>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        read!(self, |client| async {
            // SKIP LOCKED: servers draining at once take different rows.
            let stmt = client
                .prepare_cached(&format!(
                    "UPDATE notifications SET due_at = $2 WHERE seq IN (SELECT seq FROM notifications \
                     WHERE done_at IS NULL AND due_at <= $1 ORDER BY due_at, seq LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}"
                ))
                .await?;
            let rows = client
                .query(&stmt, &[&now, &now.saturating_add(hold_ms), &limit])
                .await?;
            let mut out = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
            out.sort_by_key(|n| n.seq);
            Ok::<_, Fail>(out)
        })
    }

    async fn settle_notification(&self, seq: i64, s: &Settle) -> StoreResult<()> {
        read!(self, |client| async {
            let done = s.outcome.as_ref().map(|_| s.at);
            let stmt = client
                .prepare_cached(
                    "UPDATE notifications SET sent = $2, tries = $3, last_error = $4, outcome = $5, \
                     done_at = $6, due_at = $7 WHERE seq = $1 AND done_at IS NULL",
                )
                .await?;
            client
                .execute(
                    &stmt,
                    &[
                        &seq,
                        &to_json("notification channels", &s.sent)?,
                        &i64::from(s.tries),
                        &s.error,
                        &s.outcome,
                        &done,
                        &s.next_at,
                    ],
                )
                .await?;
            Ok::<_, Fail>(())
        })
    }

    async fn list_notifications(&self, limit: usize) -> StoreResult<Vec<Notification>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        read!(self, |client| async {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM notifications ORDER BY seq DESC LIMIT $1"
                ))
                .await?;
            let rows = client.query(&stmt, &[&limit]).await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()
        })
    }

    async fn notification_counts(&self) -> StoreResult<NotificationCounts> {
        read!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "SELECT coalesce(outcome, CASE WHEN tries > 0 THEN 'retrying' ELSE 'pending' END), \
                     count(*) FROM notifications GROUP BY 1",
                )
                .await?;
            let mut c = NotificationCounts::default();
            for row in client.query(&stmt, &[]).await? {
                let state: String = row.try_get(0)?;
                let n = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
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
            Ok::<_, Fail>(c)
        })
    }
}
