//! The `service_state` table.

use dispatch_core::RunId;
use rusqlite::{OptionalExtension, Transaction, params};

use super::runs::exists;
use super::{Fail, to_json};
use crate::{ServiceState, StoreError};

pub(super) fn put(tx: &Transaction<'_>, state: &ServiceState) -> Result<(), Fail> {
    if !exists(tx, &state.run_id)? {
        return Err(Fail::Store(StoreError::NotFound(state.run_id.to_string())));
    }
    tx.prepare_cached(
        "INSERT INTO service_state (run_id, config, schedules, listeners, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run_id) DO UPDATE SET config = excluded.config,
             schedules = excluded.schedules, listeners = excluded.listeners,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        state.run_id.as_str(),
        to_json("service config", &state.config)?,
        to_json("service schedules", &state.schedules)?,
        to_json("service listeners", &state.listeners)?,
        state.updated_at,
    ])?;
    Ok(())
}

pub(super) fn get(tx: &Transaction<'_>, run: &RunId) -> Result<Option<ServiceState>, Fail> {
    let row = tx
        .prepare_cached(
            "SELECT config, schedules, listeners, updated_at FROM service_state WHERE run_id = ?1",
        )?
        .query_row([run.as_str()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((config, schedules, listeners, updated_at)) = row else {
        return Ok(None);
    };
    let json = |what: &str, text: &str| {
        serde_json::from_str(text)
            .map_err(|e| Fail::Corrupt(format!("service {what} of run {run}: {e}")))
    };
    Ok(Some(ServiceState {
        run_id: run.clone(),
        config: json("config", &config)?,
        schedules: json("schedules", &schedules)?,
        listeners: json("listeners", &listeners)?,
        updated_at,
    }))
}
