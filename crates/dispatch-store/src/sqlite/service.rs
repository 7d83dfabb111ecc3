//! The `service_state` table.

use dispatch_core::{RunId, Ts};
use rusqlite::{OptionalExtension, Transaction, params};

use super::runs::exists;
use super::{Fail, to_json};
use crate::{QueuedWake, Run, ServiceState, StoreError};

pub(super) fn put(tx: &Transaction<'_>, state: &ServiceState) -> Result<(), Fail> {
    if !exists(tx, &state.run_id)? {
        return Err(Fail::Store(StoreError::NotFound(state.run_id.to_string())));
    }
    if let Some(name) = &state.name {
        claim_name(tx, name, &state.run_id)?;
    }
    tx.prepare_cached(
        "INSERT INTO service_state (run_id, config, schedules, listeners, updated_at, name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (run_id) DO UPDATE SET config = excluded.config,
             schedules = excluded.schedules, listeners = excluded.listeners,
             updated_at = excluded.updated_at, name = excluded.name",
    )?
    .execute(params![
        state.run_id.as_str(),
        to_json("service config", &state.config)?,
        to_json("service schedules", &state.schedules)?,
        to_json("service listeners", &state.listeners)?,
        state.updated_at,
        state.name,
    ])?;
    Ok(())
}

/// Frees `name` for `run`: refused while another running service holds it;
/// taken from a service that is no longer running.
fn claim_name(tx: &Transaction<'_>, name: &str, run: &RunId) -> Result<(), Fail> {
    let holder = tx
        .prepare_cached(
            "SELECT s.run_id, r.status FROM service_state s JOIN runs r ON r.id = s.run_id
             WHERE s.name = ?1 AND s.run_id <> ?2",
        )?
        .query_row(params![name, run.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?;
    if let Some((holder, status)) = holder {
        if status == "running" {
            return Err(Fail::Store(StoreError::ServiceNameTaken {
                name: name.to_string(),
                run: super::runs::parse_id(&holder)?,
            }));
        }
        tx.prepare_cached("UPDATE service_state SET name = NULL WHERE run_id = ?1")?
            .execute([holder])?;
    }
    Ok(())
}

pub(super) fn get(tx: &Transaction<'_>, run: &RunId) -> Result<Option<ServiceState>, Fail> {
    let rows = select(
        tx,
        "SELECT run_id, config, schedules, listeners, updated_at, name FROM service_state WHERE run_id = ?1",
        run.as_str(),
    )?;
    Ok(rows.into_iter().next())
}

pub(super) fn fire(
    tx: &Transaction<'_>,
    state: &ServiceState,
    expected: Ts,
    wakes: &[QueuedWake],
) -> Result<Option<Vec<Run>>, Fail> {
    let changed = tx
        .prepare_cached(
            "UPDATE service_state SET config = ?2, schedules = ?3, listeners = ?4, updated_at = ?5
             WHERE run_id = ?1 AND updated_at = ?6
               AND EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND status = 'running')",
        )?
        .execute(params![
            state.run_id.as_str(),
            to_json("service config", &state.config)?,
            to_json("service schedules", &state.schedules)?,
            to_json("service listeners", &state.listeners)?,
            state.updated_at,
            expected,
        ])?;
    if changed != 1 {
        return Ok(None);
    }
    let mut runs = Vec::with_capacity(wakes.len());
    for wake in wakes {
        let created =
            super::queue::enqueue_with(tx, &wake.run, &wake.extras, &wake.options, false)?;
        runs.push(match created {
            crate::Created::New(run) | crate::Created::Existing(run) => run,
        });
    }
    Ok(Some(runs))
}

pub(super) fn named(tx: &Transaction<'_>, name: Option<&str>) -> Result<Vec<ServiceState>, Fail> {
    let sql = "SELECT s.run_id, s.config, s.schedules, s.listeners, s.updated_at, s.name
         FROM service_state s JOIN runs r ON r.id = s.run_id
         WHERE s.name IS NOT NULL AND r.status = 'running' AND (?1 = '' OR s.name = ?1)
         ORDER BY s.name";
    select(tx, sql, name.unwrap_or(""))
}

fn select(tx: &Transaction<'_>, sql: &str, arg: &str) -> Result<Vec<ServiceState>, Fail> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt
        .query_map([arg], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, config, schedules, listeners, updated_at, name)| {
            let run = super::runs::parse_id(&id)?;
            let json = |what: &str, text: &str| {
                serde_json::from_str(text)
                    .map_err(|e| Fail::Corrupt(format!("service {what} of run {run}: {e}")))
            };
            Ok(ServiceState {
                config: json("config", &config)?,
                schedules: json("schedules", &schedules)?,
                listeners: json("listeners", &listeners)?,
                run_id: run.clone(),
                updated_at,
                name,
            })
        })
        .collect()
}

/// See [`crate::ServiceStore::claim_delivery`].
pub(super) fn claim_delivery(
    tx: &Transaction<'_>,
    service: &str,
    key: &str,
    expires_at: Ts,
    now: Ts,
) -> Result<bool, Fail> {
    tx.prepare_cached("DELETE FROM webhook_deliveries WHERE expires_at <= ?1")?
        .execute([now])?;
    let n = tx
        .prepare_cached(
            "INSERT INTO webhook_deliveries (service, delivery, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (service, delivery) DO NOTHING",
        )?
        .execute(params![service, key, expires_at])?;
    Ok(n == 1)
}

/// See [`crate::ServiceStore::release_delivery`].
pub(super) fn release_delivery(tx: &Transaction<'_>, service: &str, key: &str) -> Result<(), Fail> {
    tx.prepare_cached("DELETE FROM webhook_deliveries WHERE service = ?1 AND delivery = ?2")?
        .execute(params![service, key])?;
    Ok(())
}
