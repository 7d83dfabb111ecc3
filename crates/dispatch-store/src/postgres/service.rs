//! The `service_state` table (as SQLite's `sqlite/service.rs`).

use deadpool_postgres::Transaction;
use dispatch_core::{RunId, Ts};
use tokio_postgres::error::SqlState;

use super::runs::parse_id;
use super::{Fail, to_json};
use crate::{QueuedWake, Run, ServiceState, StoreError};

const COLUMNS: &str = "s.run_id, s.config, s.schedules, s.listeners, s.updated_at, s.name";

pub(super) async fn put(tx: &Transaction<'_>, state: &ServiceState) -> Result<(), Fail> {
    let found = tx
        .query_opt(
            "SELECT 1 FROM runs WHERE id = $1 FOR UPDATE",
            &[&state.run_id.as_str()],
        )
        .await?;
    if found.is_none() {
        return Err(Fail::Store(StoreError::NotFound(state.run_id.to_string())));
    }
    if let Some(name) = &state.name {
        claim_name(tx, name, &state.run_id).await?;
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO service_state (run_id, config, schedules, listeners, updated_at, name)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run_id) DO UPDATE SET config = excluded.config,
                 schedules = excluded.schedules, listeners = excluded.listeners,
                 updated_at = excluded.updated_at, name = excluded.name",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &state.run_id.as_str(),
                &to_json("service config", &state.config)?,
                &to_json("service schedules", &state.schedules)?,
                &to_json("service listeners", &state.listeners)?,
                &state.updated_at,
                &state.name,
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        // Another server registered the name between our check and insert.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(Fail::Store(StoreError::ServiceNameTaken {
                name: state.name.clone().unwrap_or_default(),
                run: state.run_id.clone(),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// Frees `name` for `run`: refused while another running service holds it;
/// taken from a service that is no longer running.
async fn claim_name(tx: &Transaction<'_>, name: &str, run: &RunId) -> Result<(), Fail> {
    let holder = tx
        .query_opt(
            "SELECT s.run_id, r.status FROM service_state s JOIN runs r ON r.id = s.run_id
             WHERE s.name = $1 AND s.run_id <> $2 FOR UPDATE OF s",
            &[&name, &run.as_str()],
        )
        .await?;
    if let Some(row) = holder {
        let holder: String = row.get(0);
        let status: String = row.get(1);
        if status == "running" {
            return Err(Fail::Store(StoreError::ServiceNameTaken {
                name: name.to_string(),
                run: parse_id(&holder)?,
            }));
        }
        tx.execute(
            "UPDATE service_state SET name = NULL WHERE run_id = $1",
            &[&holder],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn get(tx: &Transaction<'_>, run: &RunId) -> Result<Option<ServiceState>, Fail> {
    let sql = format!("SELECT {COLUMNS} FROM service_state s WHERE s.run_id = $1");
    let rows = tx.query(&sql, &[&run.as_str()]).await?;
    Ok(decode(rows)?.into_iter().next())
}

pub(super) async fn fire(
    tx: &Transaction<'_>,
    state: &ServiceState,
    expected: Ts,
    wakes: &[QueuedWake],
) -> Result<Option<Vec<Run>>, Fail> {
    let stmt = tx
        .prepare_cached(
            "UPDATE service_state SET config = $2, schedules = $3, listeners = $4, updated_at = $5
             WHERE run_id = $1 AND updated_at = $6
               AND EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status = 'running')",
        )
        .await?;
    let changed = tx
        .execute(
            &stmt,
            &[
                &state.run_id.as_str(),
                &to_json("service config", &state.config)?,
                &to_json("service schedules", &state.schedules)?,
                &to_json("service listeners", &state.listeners)?,
                &state.updated_at,
                &expected,
            ],
        )
        .await?;
    if changed != 1 {
        return Ok(None);
    }
    let mut runs = Vec::with_capacity(wakes.len());
    for wake in wakes {
        let created =
            super::queue::enqueue_with(tx, &wake.run, &wake.extras, &wake.options, false).await?;
        runs.push(match created {
            crate::Created::New(run) | crate::Created::Existing(run) => run,
        });
    }
    Ok(Some(runs))
}

pub(super) async fn named(
    tx: &Transaction<'_>,
    name: Option<&str>,
) -> Result<Vec<ServiceState>, Fail> {
    let sql = format!(
        "SELECT {COLUMNS} FROM service_state s JOIN runs r ON r.id = s.run_id
         WHERE s.name IS NOT NULL AND r.status = 'running' AND ($1 = '' OR s.name = $1)
         ORDER BY s.name"
    );
    let rows = tx.query(&sql, &[&name.unwrap_or("")]).await?;
    decode(rows)
}

fn decode(rows: Vec<tokio_postgres::Row>) -> Result<Vec<ServiceState>, Fail> {
    rows.iter()
        .map(|row| {
            let run = parse_id(row.get::<_, &str>(0))?;
            let json = |what: &str, i: usize| {
                serde_json::from_str(row.get::<_, &str>(i))
                    .map_err(|e| Fail::Corrupt(format!("service {what} of run {run}: {e}")))
            };
            Ok(ServiceState {
                config: json("config", 1)?,
                schedules: json("schedules", 2)?,
                listeners: json("listeners", 3)?,
                updated_at: row.get(4),
                name: row.get(5),
                run_id: run.clone(),
            })
        })
        .collect()
}

/// See [`crate::ServiceStore::claim_delivery`].
pub(super) async fn claim_delivery(
    tx: &Transaction<'_>,
    service: &str,
    key: &str,
    expires_at: Ts,
    now: Ts,
) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM webhook_deliveries WHERE expires_at <= $1")
        .await?;
    tx.execute(&stmt, &[&now]).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO webhook_deliveries (service, delivery, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (service, delivery) DO NOTHING",
        )
        .await?;
    Ok(tx.execute(&stmt, &[&service, &key, &expires_at]).await? == 1)
}

/// See [`crate::ServiceStore::release_delivery`].
pub(super) async fn release_delivery(
    tx: &Transaction<'_>,
    service: &str,
    key: &str,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("DELETE FROM webhook_deliveries WHERE service = $1 AND delivery = $2")
        .await?;
    tx.execute(&stmt, &[&service, &key]).await?;
    Ok(())
}

#[async_trait::async_trait]
impl crate::ServiceStore for super::PgStore {
    async fn put_service_state(&self, state: &crate::ServiceState) -> crate::StoreResult<()> {
        let put = in_tx!(self, |tx| put(&tx, state));
        match (put, &state.name) {
            // Lost a race for the name: say who holds it.
            (Err(StoreError::ServiceNameTaken { .. }), Some(name)) => {
                let holder = self.service_named(name).await?;
                Err(StoreError::ServiceNameTaken {
                    name: name.clone(),
                    run: holder.map_or_else(|| state.run_id.clone(), |h| h.run_id),
                })
            }
            (other, _) => other,
        }
    }

    async fn get_service_state(
        &self,
        run: &RunId,
    ) -> crate::StoreResult<Option<crate::ServiceState>> {
        in_tx!(self, |tx| get(&tx, run))
    }

    async fn fire_service(
        &self,
        state: &crate::ServiceState,
        expected: Ts,
        wakes: &[crate::QueuedWake],
    ) -> crate::StoreResult<Option<Vec<Run>>> {
        in_tx!(self, |tx| fire(&tx, state, expected, wakes))
    }

    async fn named_services(&self) -> crate::StoreResult<Vec<crate::ServiceState>> {
        in_tx!(self, |tx| named(&tx, None))
    }

    async fn service_named(&self, name: &str) -> crate::StoreResult<Option<crate::ServiceState>> {
        let found = in_tx!(self, |tx| named(&tx, Some(name)))?;
        Ok(found.into_iter().next())
    }
    async fn claim_delivery(
        &self,
        svc: &str,
        key: &str,
        exp: Ts,
        now: Ts,
    ) -> crate::StoreResult<bool> {
        in_tx!(self, |tx| claim_delivery(&tx, svc, key, exp, now))
    }

    async fn release_delivery(&self, svc: &str, key: &str) -> crate::StoreResult<()> {
        in_tx!(self, |tx| release_delivery(&tx, svc, key))
    }
}
