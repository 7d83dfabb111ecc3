//! The `workers` table (as SQLite's `sqlite/workers.rs`).

use deadpool_postgres::Transaction;
use dispatch_core::Ts;

use async_trait::async_trait;

use super::{Fail, PgStore};
use crate::StoreResult;
use crate::workers::{FORGET, FORGET_AFTER_MS, LIST, UPSERT, labels_json, labels_of, renewed};
use crate::{WorkerBeat, WorkerInfo};

fn placeholders(sql: &str) -> String {
    let mut s = sql.replace("SINCE", "$1");
    for i in (1..=11).rev() {
        s = s.replace(&format!("P{i}"), &format!("${i}"));
    }
    s
}

pub(super) async fn beat(
    tx: &Transaction<'_>,
    beat: &WorkerBeat,
    stale_before: Ts,
    dead: Option<u32>,
) -> Result<bool, Fail> {
    let stmt = tx.prepare_cached(&placeholders(UPSERT)).await?;
    let changed = tx
        .execute(
            &stmt,
            &[
                &beat.name,
                &labels_json(&beat.labels),
                &i64::from(beat.slots),
                &beat.lease_ms,
                &beat.started_at,
                &beat.seen_at,
                &beat.stopped_at,
                &beat.host,
                &i64::from(beat.pid),
                &stale_before,
                &dead.map_or(-1, i64::from),
            ],
        )
        .await?;
    let forget = tx.prepare_cached(&placeholders(FORGET)).await?;
    tx.execute(&forget, &[&(beat.seen_at - FORGET_AFTER_MS)])
        .await?;
    Ok(changed == 1)
}

pub(super) async fn list(tx: &Transaction<'_>, since: Ts) -> Result<Vec<WorkerInfo>, Fail> {
    let stmt = tx.prepare_cached(&placeholders(LIST)).await?;
    let rows = tx.query(&stmt, &[&since]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let lease_ms: i64 = row.get(3);
            WorkerInfo {
                beat: WorkerBeat {
                    name: row.get(0),
                    labels: labels_of(row.get::<_, &str>(1)),
                    slots: u32::try_from(row.get::<_, i64>(2)).unwrap_or(u32::MAX),
                    lease_ms,
                    started_at: row.get(4),
                    seen_at: row.get(5),
                    stopped_at: row.get(6),
                    host: row.get(7),
                    pid: u32::try_from(row.get::<_, i64>(8)).unwrap_or(0),
                },
                held: u32::try_from(row.get::<_, i64>(9)).unwrap_or(u32::MAX),
                renewed_at: renewed(row.get(10), lease_ms),
            }
        })
        .collect())
}

#[async_trait]
impl crate::WorkerStore for PgStore {
    async fn worker_beat(
        &self,
        beat: &crate::WorkerBeat,
        stale_before: Ts,
        dead: Option<u32>,
    ) -> StoreResult<bool> {
        in_tx!(self, |tx| super::workers::beat(
            &tx,
            beat,
            stale_before,
            dead
        ))
    }

    async fn list_workers(&self, since: Ts) -> StoreResult<Vec<crate::WorkerInfo>> {
        in_tx!(self, |tx| list(&tx, since))
    }
}
