//! The `workers` table.

use async_trait::async_trait;
use dispatch_core::Ts;
use rusqlite::params;

use super::SqliteStore;
use crate::workers::{FORGET, FORGET_AFTER_MS, LIST, UPSERT, labels_json, labels_of, renewed};
use crate::{StoreResult, WorkerBeat, WorkerInfo, WorkerStore};

fn placeholders(sql: &str) -> String {
    let mut s = sql.replace("SINCE", "?1");
    for i in (1..=11).rev() {
        s = s.replace(&format!("P{i}"), &format!("?{i}"));
    }
    s
}

#[async_trait]
impl WorkerStore for SqliteStore {
    async fn worker_beat(
        &self,
        beat: &WorkerBeat,
        stale_before: Ts,
        dead: Option<u32>,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let changed = tx.prepare_cached(&placeholders(UPSERT))?.execute(params![
                beat.name,
                labels_json(&beat.labels),
                beat.slots,
                beat.lease_ms,
                beat.started_at,
                beat.seen_at,
                beat.stopped_at,
                beat.host,
                beat.pid,
                stale_before,
                dead.map_or(-1, i64::from),
            ])?;
            tx.prepare_cached(&placeholders(FORGET))?
                .execute([beat.seen_at - FORGET_AFTER_MS])?;
            Ok(changed == 1)
        })
    }

    async fn list_workers(&self, since: Ts) -> StoreResult<Vec<WorkerInfo>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&placeholders(LIST))?;
            let rows = stmt.query_map([since], |row| {
                let lease_ms: i64 = row.get(3)?;
                Ok(WorkerInfo {
                    beat: WorkerBeat {
                        name: row.get(0)?,
                        labels: labels_of(&row.get::<_, String>(1)?),
                        slots: row.get(2)?,
                        lease_ms,
                        started_at: row.get(4)?,
                        seen_at: row.get(5)?,
                        stopped_at: row.get(6)?,
                        host: row.get(7)?,
                        pid: row.get(8)?,
                    },
                    held: row.get(9)?,
                    renewed_at: renewed(row.get(10)?, lease_ms),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
